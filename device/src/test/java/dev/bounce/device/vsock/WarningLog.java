package dev.bounce.device.vsock;

import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.logging.Handler;
import java.util.logging.Level;
import java.util.logging.LogRecord;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;

/**
 * The warnings bounce logs (System.Logger, which goes to java.util.logging) while this is open: the
 * engine's guest-error lines ("ring 0 stopped by a guest error ...") and the device's; or the lines
 * from another level up.
 */
final class WarningLog implements AutoCloseable {
  private final Logger logger = Logger.getLogger("dev.bounce"); // held: loggers are weak
  private final List<String> lines = new CopyOnWriteArrayList<>();
  private final Level atLeast;
  private final Handler capture =
      new Handler() {
        private final SimpleFormatter formatter = new SimpleFormatter();

        @Override
        public void publish(LogRecord r) {
          if (r.getLevel().intValue() >= atLeast.intValue()) {
            lines.add(r.getLoggerName() + ": " + formatter.formatMessage(r));
          }
        }

        @Override
        public void flush() {}

        @Override
        public void close() {}
      };

  WarningLog() {
    this(Level.WARNING);
  }

  WarningLog(Level atLeast) {
    this.atLeast = atLeast;
    logger.addHandler(capture);
  }

  List<String> lines() {
    return List.copyOf(lines);
  }

  /** Whether a warning contains every one of {@code parts}. */
  boolean any(String... parts) {
    return lines.stream().anyMatch(l -> List.of(parts).stream().allMatch(l::contains));
  }

  @Override
  public void close() {
    logger.removeHandler(capture);
  }
}
