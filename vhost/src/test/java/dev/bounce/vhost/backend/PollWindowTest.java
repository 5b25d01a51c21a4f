package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

/** The adaptive poll window and its bounds, on given times (no loop, no clock). */
class PollWindowTest {
  private static final long US = 1_000;

  @Test
  void startsAtItsBase() {
    assertEquals(50 * US, new PollWindow(new RingPolling(50, 200)).nanos());
  }

  @Test
  void aWindowRunsForItsLengthAfterTheRingsLastWork() {
    PollWindow w = new PollWindow(new RingPolling(50, 200));
    w.opened(1_000 * US);
    assertTrue(w.isOpen(1_050 * US - 1));
    assertFalse(w.isOpen(1_050 * US));
  }

  @Test
  void aDriverThatKicksWithinTheMaximumIsPolledUntilCaught() {
    PollWindow w = new PollWindow(new RingPolling(50, 200));
    Driver driver = new Driver(w, 120 * US); // works again 120 us after the ring's last work
    long[] expected = {100 * US, 200 * US, 200 * US};
    for (long nanos : expected) {
      driver.pause();
      assertEquals(nanos, w.nanos());
    }
    assertEquals(2, driver.kicks, "the third pause fell inside the window: no kick");
  }

  @Test
  void aDriverThatKicksLaterThanTheMaximumIsPolledDownToTheBase() {
    PollWindow w = grown(new RingPolling(50, 400));
    Driver driver = new Driver(w, 1_000 * US); // a kick a millisecond after the last work
    long[] expected = {200 * US, 100 * US, 50 * US, 50 * US};
    for (long nanos : expected) {
      driver.pause();
      assertEquals(nanos, w.nanos());
    }
  }

  @Test
  void theEdgeIsTheTimeSinceTheLastWork() {
    // A kick 200 us after the last work, which a window of the maximum would have caught, grows
    // the window; one a nanosecond later does not, however soon after the close it came.
    PollWindow caught = new PollWindow(new RingPolling(100, 200));
    caught.opened(0);
    caught.closed();
    caught.kicked(200 * US);
    assertEquals(200 * US, caught.nanos());

    PollWindow missed = new PollWindow(new RingPolling(100, 200));
    missed.opened(0);
    missed.closed();
    missed.kicked(200 * US + 1);
    assertEquals(100 * US, missed.nanos());
  }

  @Test
  void onlyTheFirstKickAfterAClosedWindowTeaches() {
    PollWindow w = new PollWindow(new RingPolling(50, 200));
    w.kicked(10 * US); // no window closed before it: the ring's first kick
    assertEquals(50 * US, w.nanos());
    w.opened(0);
    w.closed();
    w.kicked(60 * US);
    assertEquals(100 * US, w.nanos());
    w.kicked(70 * US); // a second kick before the next window: already counted
    assertEquals(100 * US, w.nanos());
  }

  @Test
  void aKickWhileAWindowIsOpenSaysNothingOfTheLastOne() {
    // Closed after work at 0; the ring then worked again without a kick (the device asked for it),
    // and a new window is open when a kick comes a millisecond after the old work.
    PollWindow w = new PollWindow(new RingPolling(50, 200));
    w.opened(0);
    w.closed();
    w.opened(900 * US);
    w.kicked(1_000 * US);
    assertEquals(50 * US, w.nanos());
  }

  @Test
  void resetGoesBackToTheBase() {
    PollWindow w = grown(new RingPolling(50, 400));
    w.opened(0);
    w.closed();
    w.reset();
    assertEquals(50 * US, w.nanos());
    w.kicked(10 * US); // the close before the reset does not count
    assertEquals(50 * US, w.nanos());
  }

  @Test
  void boundsAreCheckedAndParsed() {
    assertEquals(new RingPolling(50, 200), RingPolling.parse("50:200"));
    assertEquals(new RingPolling(80, 80), RingPolling.parse("80"));
    assertEquals(RingPolling.OFF, RingPolling.parse("0"));
    assertThrows(IllegalArgumentException.class, () -> new RingPolling(100, 50));
    assertThrows(IllegalArgumentException.class, () -> new RingPolling(-1, 50));
    assertThrows(IllegalArgumentException.class, () -> RingPolling.parse("0:2000000"));
    // A window grows by doubling, so from 0 it would not: 0 alone is polling off.
    assertThrows(IllegalArgumentException.class, () -> RingPolling.parse("0:200"));
    IllegalArgumentException e =
        assertThrows(IllegalArgumentException.class, () -> RingPolling.parse("fast"));
    assertEquals(
        "'fast' is not US[:MAX] in microseconds (like 50:200, or 0 for no polling)",
        e.getMessage());
  }

  /** A driver that works again {@code gap} after the ring's last work, each pause. */
  private static final class Driver {
    private final PollWindow window;
    private final long gap;
    private long lastWork;
    int kicks;

    Driver(PollWindow window, long gap) {
      this.window = window;
      this.gap = gap;
    }

    /** One pause: caught by the poll if the window is long enough, else a kick after the close. */
    void pause() {
      window.opened(lastWork);
      if (!window.isOpen(lastWork + gap)) {
        window.closed();
        window.kicked(lastWork + gap);
        kicks++;
      }
      lastWork += gap;
    }
  }

  /** A window grown to its maximum by kicks that each came right after it closed. */
  private static PollWindow grown(RingPolling bounds) {
    PollWindow w = new PollWindow(bounds);
    long t = 0;
    for (int i = 0; i < 32 && w.nanos() < bounds.maxMicros() * US; i++) {
      w.opened(t);
      w.closed();
      t += w.nanos() + 1;
      w.kicked(t);
    }
    assertEquals(bounds.maxMicros() * US, w.nanos(), "grown to the maximum");
    return w;
  }
}
