package dev.bounce.device.cli;

/** A command line the user got wrong: printed without a stack trace, exit status 2. */
final class UsageException extends Exception {
  UsageException(String message) {
    super(message, null, false, false);
  }
}
