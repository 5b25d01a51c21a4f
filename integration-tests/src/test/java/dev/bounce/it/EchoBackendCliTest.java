package dev.bounce.it;

import static dev.bounce.it.LauncherTest.assertUsageError;

import java.nio.file.Path;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code scripts/bounce echo-backend} refuses at startup what it could not serve, with one line
 * naming the flag: otherwise the first frontend to connect would find out.
 */
@Timeout(value = 120, unit = TimeUnit.SECONDS)
class EchoBackendCliTest {
  @TempDir Path dir;

  private void refused(String says, String... flags) throws Exception {
    String[] args = new String[flags.length + 3];
    args[0] = "echo-backend";
    args[1] = "--socket";
    args[2] = dir.resolve("echo.sock").toString();
    System.arraycopy(flags, 0, args, 3, flags.length);
    assertUsageError(says, args);
  }

  @Test
  void aQueueSizeThatIsNotAPowerOfTwoUpTo32768IsRefused() throws Exception {
    refused("--queue-size 3 is not a power of two up to 32768", "--queue-size", "3");
    refused("--queue-size 65536 is not a power of two up to 32768", "--queue-size", "65536");
    refused("--queue-size 0 is not a power of two up to 32768", "--queue-size", "0");
  }

  @Test
  void aQueueCountOutside1To256IsRefused() throws Exception {
    refused("--queues 0 is not between 1 and 256", "--queues", "0");
    refused("--queues 100000 is not between 1 and 256", "--queues", "100000");
  }

  @Test
  void aDevicePoolThatCannotBeCreatedIsRefusedAtStartup() throws Exception {
    refused("--device-pool 100000G: ", "--device-pool", "100000G");
    refused("--device-pool 1000: ", "--device-pool", "1000");
  }
}
