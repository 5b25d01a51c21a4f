package dev.bounce.pool;

import static java.lang.foreign.ValueLayout.JAVA_LONG_UNALIGNED;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.testing.OpenFds;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** EventFd: signals add up, drain returns and resets the count, nothing ever blocks. */
class EventFdTest {
  /**
   * The bound on what must not block: a blocking drain would never return, so the bound only has to
   * be longer than a busy machine takes for a thousand drains or another thread's signal.
   */
  private static final Duration NO_BLOCKING = Duration.ofSeconds(20);

  @Test
  @DisplayName("three signals, one drain: 3; the counter is then reset")
  void signalsAddUpAndDrainResets() throws Exception {
    try (EventFd eventFd = EventFd.create()) {
      eventFd.signal();
      eventFd.signal();
      eventFd.signal();
      assertEquals(3, eventFd.drain());
      assertEquals(0, eventFd.drain());
      eventFd.signal();
      assertEquals(1, eventFd.drain());
    }
  }

  @Test
  @DisplayName("drain of an empty eventfd returns 0 at once, without blocking")
  void drainOnEmptyDoesNotBlock() throws Exception {
    try (EventFd eventFd = EventFd.create()) {
      assertTimeoutPreemptively(
          NO_BLOCKING,
          () -> {
            for (int i = 0; i < 1000; i++) assertEquals(0, eventFd.drain());
          });
    }
  }

  @Test
  @DisplayName("created close-on-exec and non-blocking; it is an eventfd")
  void createdNonBlockingAndCloseOnExec() throws Exception {
    try (EventFd eventFd = EventFd.create()) {
      int fd = eventFd.fd().value();
      assertEquals("anon_inode:[eventfd]", OpenFds.target(fd));
      assertEquals(1, Libc.fcntl(fd, Libc.F_GETFD, 0) & 1, "FD_CLOEXEC");
      assertEquals(Libc.EFD_NONBLOCK, Libc.fcntl(fd, Libc.F_GETFL, 0) & Libc.EFD_NONBLOCK);
    }
  }

  @Test
  @DisplayName("signals from other threads are all counted")
  void signalsFromOtherThreads() throws Exception {
    int threads = 4;
    int each = 2_000;
    try (EventFd eventFd = EventFd.create()) {
      ExecutorService pool = Executors.newFixedThreadPool(threads);
      try {
        CountDownLatch start = new CountDownLatch(1);
        List<Future<?>> done = new ArrayList<>();
        for (int t = 0; t < threads; t++) {
          done.add(
              pool.submit(
                  () -> {
                    start.await();
                    for (int i = 0; i < each; i++) eventFd.signal();
                    return null;
                  }));
        }
        start.countDown();
        long total = 0;
        // Drain while they signal: no signal is lost between a read and the next write.
        while (!done.stream().allMatch(Future::isDone)) total += eventFd.drain();
        for (Future<?> f : done) f.get();
        total += eventFd.drain();
        assertEquals((long) threads * each, total);
      } finally {
        pool.shutdownNow();
        assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
      }
    }
  }

  @Test
  @DisplayName("a signal from another thread is seen by a thread polling with drain")
  void signalWakesAPollingDrain() throws Exception {
    try (EventFd eventFd = EventFd.create()) {
      Thread signaller =
          Thread.ofPlatform()
              .start(
                  () -> {
                    try {
                      Thread.sleep(50);
                      eventFd.signal();
                    } catch (Exception e) {
                      throw new RuntimeException(e);
                    }
                  });
      long got =
          assertTimeoutPreemptively(
              NO_BLOCKING,
              () -> {
                long n;
                while ((n = eventFd.drain()) == 0) Thread.onSpinWait();
                return n;
              });
      signaller.join();
      assertEquals(1, got);
    }
  }

  @Test
  @DisplayName("a counter at its maximum: signal does not throw (already signalled)")
  void signalAtMaximumIsNotAnError() throws Exception {
    long max = 0xffff_ffff_ffff_fffeL; // the largest value an eventfd counter holds
    try (EventFd eventFd = EventFd.create();
        Arena arena = Arena.ofConfined()) {
      MemorySegment value = arena.allocate(8);
      value.set(JAVA_LONG_UNALIGNED, 0, max);
      assertEquals(8, Libc.write(eventFd.fd().value(), value, 8));
      eventFd.signal(); // EAGAIN underneath
      assertEquals(max, eventFd.drain());
      assertEquals(0, eventFd.drain());
    }
  }

  @Test
  @DisplayName("an adopted eventfd fd: signals through one handle drain through the other")
  void adopt() throws Exception {
    try (EventFd created = EventFd.create()) {
      EventFd adopted = EventFd.adopt(created.fd());
      created.signal();
      created.signal();
      assertEquals(2, adopted.drain());
      adopted.close();
      assertTrue(!created.fd().isOpen(), "adopt shares ownership of the same Fd");
    }
  }
}
