package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.bounce.pool.GuestRegion;
import java.nio.file.Path;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --max-guest-memory SIZE}: the sizes it takes, the line a malformed one gets, and that both
 * device commands take it (and list it in their help) and refuse a bad one before serving.
 */
class GuestMemoryFlagTest {
  private static final long TIB = 1L << 40;

  @TempDir Path dir;

  /** The sizes of the first two tests are around x86-64's 64 TiB bound (39-bit arm64: 256 GiB). */
  private static void assume64TiB() {
    assumeTrue(GuestRegion.PROCESS_LIMIT == 64 * TIB, "the process bound is 64 TiB here");
  }

  private static final OneFlag<Long> FLAG =
      new OneFlag<>(GuestMemoryFlag.FLAG, GuestMemoryFlag::maxGuestMemory);

  @Test
  void aSizeWithAnyUnitUpTo64TiBIsTakenAndTheDefaultIs1TiB() throws Exception {
    assume64TiB();
    assertEquals(TIB, FLAG.parsed());
    for (var ok :
        Map.of(
                "2T",
                2 * TIB,
                "64T",
                64 * TIB,
                "512G",
                512L << 30,
                "1m",
                1L << 20,
                "0x10000000000",
                TIB,
                "4096",
                4096L)
            .entrySet()) {
      assertEquals(ok.getValue(), FLAG.parsed("--max-guest-memory", ok.getKey()), ok.getKey());
    }
    assertEquals(3 * TIB, FLAG.parsed("--max-guest-memory=3T"));
  }

  @Test
  void aMalformedOrImpossibleSizeIsRefusedNamingTheFlag() {
    assume64TiB();
    FLAG.refuses(
        Map.of(
            "lots", "--max-guest-memory: 'lots' is not a size",
            "2X", "--max-guest-memory: '2X' is not a size",
            "9999999T", "--max-guest-memory: '9999999T' is not a size",
            "0", "--max-guest-memory 0: a cap of 0 bytes",
            "-1T", "--max-guest-memory -1T: a cap of -1099511627776 bytes",
            "65T",
                "--max-guest-memory 65T: 71468255805440 bytes (65 TiB) is over"
                    + " 70368744177664 bytes (64 TiB)"));
  }

  @Test
  void bothDeviceCommandsListItAndRefuseABadOneBeforeServing() {
    InProcess.takenByBothDeviceCommands(
        dir, "--max-guest-memory SIZE", "--max-guest-memory", "65T");
  }
}
