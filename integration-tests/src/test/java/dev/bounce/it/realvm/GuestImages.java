package dev.bounce.it.realvm;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The kernels and initramfs images the guests boot, made by {@code scripts/realvm/prepare} once per
 * test run into integration-tests/target/realvm. The first run on a machine also installs Debian
 * packages and builds the arm64 kernel (about 5 minutes; cached in ~/.cache/bounce/realvm).
 */
record GuestImages(Path dir) {
  static final Path ROOT = Path.of("..").toAbsolutePath().normalize();

  /** Long enough for apt and the first arm64 kernel build on 2 busy cores. */
  private static final long PREPARE_MINUTES = 30;

  private static GuestImages prepared;
  private static AssertionError failed;

  /** Runs the prepare script the first time; later calls return its result (or its failure). */
  static synchronized GuestImages prepared() {
    if (failed != null) throw failed;
    if (prepared == null) {
      try {
        prepared = prepare(ROOT.resolve("integration-tests/target/realvm"));
      } catch (AssertionError e) {
        failed = e;
        throw e;
      }
    }
    return prepared;
  }

  private static GuestImages prepare(Path dir) {
    Path log = dir.resolveSibling("realvm-prepare.log");
    // Progress for the CI log: the first run on a machine can take minutes in here.
    System.err.println(
        "realvm: scripts/realvm/prepare "
            + dir
            + " (the first time on a machine: Debian packages and an arm64 kernel build, minutes;"
            + " log: "
            + log
            + ")");
    long started = System.nanoTime();
    try {
      Files.createDirectories(dir);
      Process process =
          new ProcessBuilder(ROOT.resolve("scripts/realvm/prepare").toString(), dir.toString())
              .redirectErrorStream(true)
              .redirectOutput(log.toFile())
              .start();
      if (!process.waitFor(PREPARE_MINUTES, TimeUnit.MINUTES)) {
        process.destroyForcibly().waitFor();
        throw new AssertionError(
            "scripts/realvm/prepare did not finish in " + PREPARE_MINUTES + " minutes" + tail(log));
      }
      if (process.exitValue() != 0) {
        throw new AssertionError(
            "scripts/realvm/prepare failed (exit "
                + process.exitValue()
                + "); the real-VM tests need what it names (run it by hand to see all)"
                + tail(log));
      }
    } catch (IOException e) {
      throw new AssertionError("cannot run scripts/realvm/prepare: " + e.getMessage(), e);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new AssertionError("interrupted while preparing the guest images", e);
    }
    System.err.printf(
        "realvm: guest images ready after %d s%n",
        TimeUnit.NANOSECONDS.toSeconds(System.nanoTime() - started));
    return new GuestImages(dir);
  }

  private static String tail(Path log) {
    try {
      List<String> lines = Files.readAllLines(log);
      return "\n--- last lines of "
          + log
          + " ---\n"
          + String.join("\n", lines.subList(Math.max(0, lines.size() - 40), lines.size()));
    } catch (IOException e) {
      return " (no log at " + log + ")";
    }
  }

  Path kernel(Guest.Arch arch) {
    return dir.resolve(arch.dir).resolve(arch == Guest.Arch.X86_64 ? "vmlinuz" : "Image");
  }

  Path initramfs(Guest.Arch arch) {
    return dir.resolve(arch.dir).resolve("initramfs.cpio.gz");
  }
}
