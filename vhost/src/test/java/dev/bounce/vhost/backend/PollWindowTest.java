package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import org.junit.jupiter.api.Test;

/** The adaptive poll window, on given times (the data loop's clock is not involved). */
class PollWindowTest {
  private static final long US = 1_000;

  @Test
  void startsAtItsBase() {
    assertEquals(50 * US, new PollWindow(50 * US, 200 * US).nanos());
  }

  @Test
  void aDriverThatKicksWithinTheMaximumIsPolledUntilCaught() {
    PollWindow w = new PollWindow(50 * US, 200 * US);
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
    PollWindow w = grown(50 * US, 400 * US);
    Driver driver = new Driver(w, 1_000 * US); // a kick a millisecond after the last work
    long[] expected = {200 * US, 100 * US, 50 * US, 50 * US};
    for (long nanos : expected) {
      driver.pause();
      assertEquals(nanos, w.nanos());
    }
  }

  @Test
  void theEdgeIsTheTimeSinceTheLastWork() {
    // Window 100 us: a kick 100 us after re-arming came 200 us after the last work, which a
    // window of the maximum (200 us) would have caught; one nanosecond later it would not have.
    PollWindow caught = new PollWindow(100 * US, 200 * US);
    caught.rearmed(0);
    caught.kicked(100 * US);
    assertEquals(200 * US, caught.nanos());

    PollWindow missed = new PollWindow(100 * US, 200 * US);
    missed.rearmed(0);
    missed.kicked(100 * US + 1);
    assertEquals(100 * US, missed.nanos());
  }

  @Test
  void onlyAKickAfterAClosedWindowTeaches() {
    PollWindow w = new PollWindow(50 * US, 200 * US);
    w.kicked(10 * US); // no window closed before it (the ring's first kick, or one during polling)
    assertEquals(50 * US, w.nanos());
    w.rearmed(100 * US);
    w.kicked(110 * US);
    assertEquals(100 * US, w.nanos());
    w.kicked(120 * US); // a second kick before the next window: already counted
    assertEquals(100 * US, w.nanos());
  }

  @Test
  void resetGoesBackToTheBase() {
    PollWindow w = grown(50 * US, 400 * US);
    w.rearmed(0);
    w.reset();
    assertEquals(50 * US, w.nanos());
    w.kicked(10 * US); // the re-arm before the reset does not count
    assertEquals(50 * US, w.nanos());
  }

  @Test
  void aZeroBaseNeverPolls() {
    PollWindow off = new PollWindow(0, 0);
    off.rearmed(0);
    off.kicked(1);
    assertEquals(0, off.nanos());
  }

  @Test
  void refusesAMaximumBelowTheBase() {
    assertThrows(IllegalArgumentException.class, () -> new PollWindow(100 * US, 50 * US));
    assertThrows(IllegalArgumentException.class, () -> new PollWindow(-1, 50 * US));
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

    /** One pause: caught by the poll if the window is long enough, else a kick after re-arming. */
    void pause() {
      if (gap > window.nanos()) {
        window.rearmed(lastWork + window.nanos());
        window.kicked(lastWork + gap);
        kicks++;
      }
      lastWork += gap;
    }
  }

  /** A window grown to {@code max} by kicks that each came right after it closed. */
  private static PollWindow grown(long base, long max) {
    PollWindow w = new PollWindow(base, max);
    long t = 0;
    while (w.nanos() < max) {
      t += w.nanos();
      w.rearmed(t);
      w.kicked(++t);
    }
    return w;
  }
}
