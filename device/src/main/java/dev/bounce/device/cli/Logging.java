package dev.bounce.device.cli;

import java.util.ArrayList;
import java.util.List;
import java.util.logging.ConsoleHandler;
import java.util.logging.Level;
import java.util.logging.LogManager;
import java.util.logging.Logger;
import java.util.logging.SimpleFormatter;

/**
 * One line per log record on stderr: time, level, logger, message. bounce logs through
 * System.Logger, which lands in java.util.logging; so does Netty's when no SLF4J is present.
 */
final class Logging {
  private Logging() {}

  static void configure() {
    if (System.getProperty("java.util.logging.manager") == null) {
      System.setProperty("java.util.logging.manager", KeptAtExit.class.getName());
    }
    if (System.getProperty("java.util.logging.config.file") == null) {
      System.setProperty(
          "java.util.logging.SimpleFormatter.format", "%1$tT.%1$tL %4$-7s %3$s: %5$s%6$s%n");
      LogManager.getLogManager().reset();
      Logger root = Logger.getLogger("");
      ConsoleHandler handler = new ConsoleHandler();
      handler.setFormatter(new SimpleFormatter());
      handler.setLevel(Level.ALL);
      root.addHandler(handler);
      root.setLevel(Level.INFO);
      quietNetworkProbes();
    }
    if (LogManager.getLogManager() instanceof KeptAtExit manager) manager.keep();
  }

  /**
   * Netty's loggers that warn only because the process has no IP networking: at class init, Netty
   * lists the network interfaces and the loopback (NetUtil, for IP addresses) and looks for a MAC
   * address (for channel ids, random bytes without one). bounce uses only Unix sockets, and its
   * systemd unit allows only AF_UNIX, where each start would log three warnings and a stack trace.
   */
  static final List<String> NETWORK_PROBES =
      List.of("io.netty.util.NetUtilInitializations", "io.netty.util.internal.MacAddressUtil");

  /** Held: java.util.logging keeps loggers weakly, and a collected one forgets its level. */
  private static final List<Logger> QUIETED = new ArrayList<>();

  /** Only Netty's {@link #NETWORK_PROBES} are quieted (to SEVERE); its other warnings stay. */
  static void quietNetworkProbes() {
    for (String name : NETWORK_PROBES) {
      Logger logger = Logger.getLogger(name);
      logger.setLevel(Level.SEVERE);
      QUIETED.add(logger);
    }
  }

  /**
   * The JDK's LogManager closes every handler from a shutdown hook of its own, which runs beside
   * bounce's: what bounce logs while it closes on SIGTERM (a session's end and its restricted-DMA
   * figures) would be lost. This one keeps its handlers until the JVM is gone; the console handler
   * flushes each record anyway.
   */
  public static final class KeptAtExit extends LogManager {
    private volatile boolean kept;

    public KeptAtExit() {}

    @Override
    public void reset() {
      if (!kept) super.reset();
    }

    /** From now on nothing resets the configuration (the JDK's exit hook included). */
    void keep() {
      kept = true;
    }
  }
}
