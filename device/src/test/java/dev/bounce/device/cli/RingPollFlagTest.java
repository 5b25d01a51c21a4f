package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.bounce.vhost.backend.RingPolling;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --ring-poll US[:MAX]}: what it takes, the line a bad one gets, and that both device
 * commands take it (and list it in their help) and refuse a bad one before serving.
 */
class RingPollFlagTest {
  @TempDir Path dir;

  private static final OneFlag<RingPolling> FLAG =
      new OneFlag<>(RingPollFlag.FLAG, RingPollFlag::ringPolling);

  @Test
  void boundsOrOneFixedWindowAreTakenAndTheDefaultIs50To200() throws Exception {
    assertEquals(new RingPolling(50, 200), FLAG.parsed());
    assertEquals(new RingPolling(20, 1000), FLAG.parsed("--ring-poll", "20:1000"));
    assertEquals(new RingPolling(100, 100), FLAG.parsed("--ring-poll=100"));
    assertEquals(RingPolling.OFF, FLAG.parsed("--ring-poll", "0"));
  }

  @Test
  void badBoundsAreRefusedNamingTheFlag() {
    FLAG.refuses(
        Map.of(
            "fast", "--ring-poll fast: 'fast' is not US[:MAX] in microseconds",
            "50:", "--ring-poll 50:: '50:' is not US[:MAX]",
            "200:50", "--ring-poll 200:50: ring polling of 200 us at first and 50 us at most",
            "-1", "--ring-poll -1: ring polling of -1 us",
            "0:2000000", "--ring-poll 0:2000000: ring polling of 0 us at first and 2000000",
            "0:200", "--ring-poll 0:200: ring polling of 0 us at first cannot grow"));
  }

  @Test
  void bothDeviceCommandsListItAndRefuseABadOneBeforeServing() {
    InProcess.takenByBothDeviceCommands(dir, "--ring-poll US[:MAX]", "--ring-poll", "200:50");
  }
}
