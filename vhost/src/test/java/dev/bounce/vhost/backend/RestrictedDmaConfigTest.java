package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.GuestMemory;
import dev.bounce.pool.Libc;
import dev.bounce.pool.NativeException;
import dev.bounce.pool.RestrictedPool;
import dev.bounce.vhost.backend.RestrictedDma.Policy;
import dev.bounce.vhost.protocol.ProtocolFeature;
import dev.bounce.vhost.spi.VirtioFeatures;
import java.lang.foreign.ValueLayout;
import org.junit.jupiter.api.Test;

/** {@link RestrictedDma} and {@link DevicePool}: what each configuration offers and refuses. */
class RestrictedDmaConfigTest {
  static final long BIT_27 = VirtioFeatures.bit(VirtioFeatures.RESTRICTED_DMA);
  static final long BIT_33 = VirtioFeatures.bit(VirtioFeatures.ACCESS_PLATFORM);
  static final RestrictedDma.Window WINDOW = new RestrictedDma.Window(0x5c00_0000L, 16 << 20);

  @Test
  void aPoolOffersBits27And33AndOffOffersNothing() {
    assertEquals(BIT_27 | BIT_33, new RestrictedDma(Policy.PREFERRED, WINDOW).offeredFeatures());
    assertEquals(BIT_27 | BIT_33, new RestrictedDma(Policy.REQUIRED, WINDOW).offeredFeatures());
    assertEquals(0, RestrictedDma.OFF.offeredFeatures());
    assertEquals(0, RestrictedDma.OFF.offeredProtocolFeatures());
    assertEquals(
        ProtocolFeature.SHMEM.mask(),
        new RestrictedDma(Policy.PREFERRED, new RestrictedDma.DeviceOwned(1 << 20))
            .offeredProtocolFeatures());
  }

  @Test
  void onlyRequiredRefusesAndOnlyForBit27NeverFor33() {
    RestrictedDma required = new RestrictedDma(Policy.REQUIRED, WINDOW);
    String why = required.refusal(BIT_33);
    assertTrue(why.contains("bit 27") && why.contains("--restricted-dma preferred"), why);
    assertNull(required.refusal(BIT_27), "QEMU drops 33 from SET_FEATURES: 27 alone is enough");
    assertNull(new RestrictedDma(Policy.PREFERRED, WINDOW).refusal(0));
    assertNull(RestrictedDma.OFF.refusal(0));
  }

  @Test
  void policyAndPoolMustAgreeAndBadPoolsAreRefusedAtStart() {
    assertThrows(IllegalArgumentException.class, () -> new RestrictedDma(Policy.OFF, WINDOW));
    assertThrows(IllegalArgumentException.class, () -> new RestrictedDma(Policy.REQUIRED, null));
    assertThrows(IllegalArgumentException.class, () -> new RestrictedDma.Window(0x1001, 4096));
    assertThrows(IllegalArgumentException.class, () -> new RestrictedDma.Window(-4096, 8192));
    assertThrows(IllegalArgumentException.class, () -> new RestrictedDma.DeviceOwned(1000));
    assertThrows(IllegalArgumentException.class, () -> Policy.ofFlag("maybe"));
    assertEquals(Policy.REQUIRED, Policy.ofFlag("required"));
  }

  @Test
  void theEmptyMemoryIsThePoolWindowOrNothing() {
    try (var memory = new RestrictedDma(Policy.PREFERRED, WINDOW).emptyMemory()) {
      RestrictedPool pool = (RestrictedPool) memory;
      assertEquals(WINDOW.start(), pool.start());
      assertEquals(WINDOW.size(), pool.size());
    }
    assertEquals(GuestMemory.empty(), RestrictedDma.OFF.emptyMemory());
    assertEquals(
        GuestMemory.empty(),
        new RestrictedDma(Policy.PREFERRED, new RestrictedDma.SharedRegion()).emptyMemory());
  }

  /** The frontend cannot truncate the pool under the backend's mapping (SIGBUS): it is sealed. */
  @Test
  void theDevicePoolIsSealedAndMappedAtAddressZero() throws Exception {
    try (DevicePool pool = DevicePool.create(1 << 20);
        RestrictedPool memory = pool.memory()) {
      assertThrows(NativeException.class, () -> Libc.ftruncate(pool.fd().value(), 4096));
      memory.translate(0, 8).set(ValueLayout.JAVA_LONG, 0, 42);
      assertEquals(42, memory.translateUserAddress(0, 8).get(ValueLayout.JAVA_LONG, 0));
      assertThrows(Exception.class, () -> memory.translate((1 << 20) - 4, 8));
      assertEquals(1, pool.config().regionCount());
      assertEquals(1 << 20, pool.mapping().length());
      assertTrue(pool.mapping().writable());
    }
  }
}
