package dev.bounce.vhost.loop;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/** FdWatch on real eventfds and a real epoll loop. */
class FdWatchTest {
  @Test
  void runsTheCallbackOnTheLoopWhenTheFdIsReadable() throws Exception {
    try (EventLoops loops = new EventLoops(1, "test-watch");
        EventFd fd = EventFd.create()) {
      CountDownLatch called = new CountDownLatch(1);
      var loop = loops.next();
      try (FdWatch watch =
          FdWatch.start(
              loop,
              fd.fd(),
              () -> {
                assertTrue(loop.inEventLoop());
                drain(fd);
                called.countDown();
              })) {
        fd.signal();
        assertTrue(called.await(20, TimeUnit.SECONDS), "callback ran");
      }
    }
  }

  @Test
  void aThrowingCallbackDoesNotEndTheLoopNorOtherWatches() throws Exception {
    try (EventLoops loops = new EventLoops(1, "test-watch");
        EventFd bad = EventFd.create();
        EventFd good = EventFd.create()) {
      var loop = loops.next();
      AtomicInteger badCalls = new AtomicInteger();
      CountDownLatch goodCalled = new CountDownLatch(1);
      try (FdWatch broken =
              FdWatch.start(
                  loop,
                  bad.fd(),
                  () -> {
                    badCalls.incrementAndGet();
                    throw new IllegalStateException("a bug in a callback");
                  });
          FdWatch working =
              FdWatch.start(
                  loop,
                  good.fd(),
                  () -> {
                    drain(good);
                    goodCalled.countDown();
                  })) {
        bad.signal(); // never drained: level-triggered, it would fire again and again if still
        // watched
        assertEquals("alive", loop.submit(() -> "alive").get(20, TimeUnit.SECONDS));
        good.signal();
        assertTrue(goodCalled.await(20, TimeUnit.SECONDS), "the other watch still runs");
        assertEquals(1, badCalls.get(), "the failing fd is no longer watched");
      }
    }
  }

  private static void drain(EventFd fd) {
    try {
      fd.drain();
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }
}
