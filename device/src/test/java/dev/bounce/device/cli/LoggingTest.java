package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.junit.jupiter.api.Test;

/**
 * Under the systemd unit's RestrictAddressFamilies=AF_UNIX, Netty's class init warns (with a stack
 * trace) that it finds no network interface, no loopback and no MAC address: those loggers, and
 * only those, are quieted.
 */
class LoggingTest {
  @Test
  void nettysNetworkProbesAreQuietedAndItsOtherWarningsAreNot() {
    Logging.quietNetworkProbes();
    for (String name :
        List.of("io.netty.util.NetUtilInitializations", "io.netty.util.internal.MacAddressUtil")) {
      assertFalse(Logger.getLogger(name).isLoggable(Level.WARNING), name);
      assertTrue(Logger.getLogger(name).isLoggable(Level.SEVERE), name);
    }
    System.gc(); // java.util.logging holds loggers weakly: the levels must outlive a collection
    assertFalse(Logger.getLogger("io.netty.util.NetUtilInitializations").isLoggable(Level.WARNING));
    for (String name :
        List.of(
            "io.netty.util.NetUtil",
            "io.netty.channel.epoll.EpollEventLoop",
            "io.netty.util.ResourceLeakDetector",
            "io.netty.channel.DefaultChannelPipeline")) {
      assertTrue(Logger.getLogger(name).isLoggable(Level.WARNING), name);
    }
  }
}
