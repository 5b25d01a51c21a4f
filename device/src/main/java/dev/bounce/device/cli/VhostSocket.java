package dev.bounce.device.cli;

import dev.bounce.vhost.backend.BackendServer;
import java.io.IOException;
import java.nio.file.Path;

/**
 * Where a device's vhost-user socket comes from: a path bounce listens at ({@code --socket}, or
 * {@code --socket-path} as vhost-user.rst's "Backend program conventions" spell it), or a socket
 * the process inherited ({@code --fd}: systemd's socket activation, or a management layer).
 */
sealed interface VhostSocket {
  BackendServer serve(BackendServer.Config config) throws IOException;

  record AtPath(Path path) implements VhostSocket {
    @Override
    public BackendServer serve(BackendServer.Config config) throws IOException {
      return BackendServer.listen(path, config);
    }

    @Override
    public String toString() {
      return path.toString();
    }
  }

  record Inherited(int fd) implements VhostSocket {
    @Override
    public BackendServer serve(BackendServer.Config config) throws IOException {
      return BackendServer.inherit(fd, config);
    }

    @Override
    public String toString() {
      return "fd " + fd;
    }
  }
}
