package dev.bounce.pool.testing;

/**
 * A child for {@link TestHelpersTest}: {@code exit CODE OUT ERR} prints OUT and ERR and exits with
 * CODE; {@code sleep} waits forever.
 */
public final class ChildJvmTestMain {
  private ChildJvmTestMain() {}

  public static void main(String[] args) throws InterruptedException {
    switch (args[0]) {
      case "exit" -> {
        System.out.println(args[2]);
        System.err.println(args[3]);
        System.exit(Integer.parseInt(args[1]));
      }
      case "sleep" -> {
        System.out.println("sleeping");
        Thread.sleep(Long.MAX_VALUE);
      }
      default -> throw new IllegalArgumentException(args[0]);
    }
  }
}
