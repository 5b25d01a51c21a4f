package dev.bounce.vhost.backend;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.pool.EventFd;
import dev.bounce.pool.Fd;
import dev.bounce.pool.GuestAddressSpace;
import dev.bounce.pool.Libc;
import dev.bounce.pool.Memfd;
import dev.bounce.pool.MemoryRegionDescription;
import dev.bounce.pool.testing.BlockedThreads;
import dev.bounce.pool.testing.BlockedThreads.Syscall;
import dev.bounce.pool.testing.OpenFds;
import dev.bounce.vhost.frontend.FrontendChannel;
import dev.bounce.vhost.protocol.FrontendRequest;
import dev.bounce.vhost.protocol.Header;
import dev.bounce.vhost.protocol.SingleMemoryRegion;
import dev.bounce.vhost.protocol.U64;
import dev.bounce.vhost.protocol.VringAddress;
import dev.bounce.vhost.protocol.VringFdIndex;
import dev.bounce.vhost.protocol.VringState;
import dev.bounce.vhost.testdevice.EchoDevice;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.management.ManagementFactory;
import java.lang.management.ThreadMXBean;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * A frontend that misbehaves cannot take the daemon down or make it leak: after every case a fresh
 * connection completes a normal handshake and echoes through both rings, and the process (frontend
 * and backend together) has exactly the fds it had before.
 *
 * <p>What each kind of bad input must get (ARCHITECTURE.md, "Errors"): a malformed message that
 * asked for a reply gets a failure reply (u64 non-zero, flags 0x5) and the connection goes on; one
 * that did not, or whose end cannot be found (size over the bound, more fds than fit), ends the
 * connection. A well-formed request the backend will not carry out gets a failure ack when it asked
 * for one. A guest error (a ring outside memory) stops that ring and signals its error eventfd.
 */
// unknownRequestCodes watches five connections for KEPT each (15 s) besides its work: 30 s left a
// busy machine little room for the rest.
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class BadInputTest {
  /**
   * How long to wait for a close or a session's end that must come: the wait ends when it does, so
   * this only bounds a broken build's wait.
   */
  private static final Duration CLOSED = Duration.ofSeconds(20);

  /**
   * How long a connection that must stay open is watched for a close that would be wrong (a busy
   * machine only makes a wrong close show later, and assertStillAnswers checks the connection too).
   */
  private static final Duration KEPT = Duration.ofSeconds(3);

  private static final Duration QUIET = Duration.ofMillis(100);

  @TempDir static Path dir;
  static EchoDevice echo;
  static BackendFixture backend;
  static int baseline;

  @BeforeAll
  static void start() throws Exception {
    echo = new EchoDevice(TestFrontend.QUEUES, TestFrontend.QUEUE_SIZE);
    backend = BackendFixture.listen(dir.resolve("bad-input.sock"), echo);
    // Warm up every path the cases take (classes load, jars open: fds that stay), then count.
    assertServing();
    try (FrontendChannel channel = connectServed()) {
      channel.send(FrontendRequest.SET_OWNER, true);
      channel.receiveFrame(TestFrontend.TIMEOUT).close();
      channel.sendRaw(header(99, 0x1, 0)); // unknown, no reply asked: logged, the session goes on
      channel.getU64(FrontendRequest.GET_FEATURES); // answered after it, so it was handled
    }
    assertServing();
    baseline = OpenFds.count();
  }

  @AfterAll
  static void stop() {
    if (backend != null) backend.close();
  }

  @BeforeEach
  void clearLog() {
    backend.clearLog();
  }

  @AfterEach
  void daemonStillServesAndNothingLeaked() throws Exception {
    assertServing();
    OpenFds.assertBackTo(baseline);
    assertEquals(List.of(), backend.loopFailures(), "exceptions that escaped into a loop");
  }

  // ---- cases ----

  @Test
  void truncatedHeaderThenClose() throws Exception {
    try (FrontendChannel channel = connectServed()) {
      channel.sendRaw(Arrays.copyOf(header(FrontendRequest.GET_FEATURES.code(), 0x1, 0), 7));
    }
  }

  @Test
  void payloadSizeOverTheBoundEndsTheConnection() throws Exception {
    for (long size : new long[] {Header.MAX_PAYLOAD + 1L, 0xffff_ffffL}) {
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(
            concat(header(FrontendRequest.SET_MEM_TABLE.code(), 0x9, (int) size), new byte[64]));
        assertTrue(channel.isClosedByPeer(CLOSED), "size " + size + ": connection closed");
      }
      backend.awaitNoSession(CLOSED);
    }
  }

  @Test
  void wrongVersionBits() throws Exception {
    // Asked for a reply: a failure reply, and the connection goes on.
    for (int flags : new int[] {0x0 | Header.NEED_REPLY, 0x2 | Header.NEED_REPLY, 0x3 | 0x8}) {
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(header(FrontendRequest.SET_OWNER.code(), flags, 0));
        assertFailureReply(channel, FrontendRequest.SET_OWNER.code());
        assertStillAnswers(channel);
      }
      backend.awaitNoSession(CLOSED);
    }
    // No reply asked for (and none possible): the connection ends.
    for (int flags : new int[] {0x0, 0x2, 0x3, 0x1 | Header.REPLY, 0x1 | 0x10}) {
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(header(FrontendRequest.GET_FEATURES.code(), flags, 0));
        assertTrue(channel.isClosedByPeer(CLOSED), "flags 0x" + Integer.toHexString(flags));
      }
      backend.awaitNoSession(CLOSED);
    }
  }

  @Test
  void moreThanEightFdsEndTheConnection() throws Exception {
    for (int count : new int[] {9, 12, 64}) {
      List<EventFd> fds = eventFds(count);
      try (FrontendChannel channel = connectServed()) {
        byte[] message = concat(header(FrontendRequest.SET_VRING_CALL.code(), 0x9, 8), u64(0));
        channel.sendRaw(message, fds.stream().map(EventFd::fd).toArray(Fd[]::new));
        assertTrue(channel.isClosedByPeer(CLOSED), count + " fds: connection closed");
      } finally {
        fds.forEach(EventFd::close);
      }
      backend.awaitNoSession(CLOSED);
    }
  }

  @Test
  void fdsOnARequestThatTakesNone() throws Exception {
    try (EventFd stray = EventFd.create();
        Memfd memfd = Memfd.create("stray", 4096)) {
      // With NEED_REPLY: refused, the fds closed, the connection goes on.
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(header(FrontendRequest.SET_OWNER.code(), 0x9, 0), stray.fd());
        assertFailureReply(channel, FrontendRequest.SET_OWNER.code());
        channel.sendRaw(
            concat(header(FrontendRequest.SET_VRING_NUM.code(), 0x9, 8), vringState(0, 256)),
            memfd.fd(),
            stray.fd());
        assertFailureReply(channel, FrontendRequest.SET_VRING_NUM.code());
        // SET_VRING_KICK takes none with the no-fd bit set.
        channel.sendRaw(
            concat(
                header(FrontendRequest.SET_VRING_KICK.code(), 0x9, 8), u64(VringFdIndex.NOFD_MASK)),
            stray.fd());
        assertFailureReply(channel, FrontendRequest.SET_VRING_KICK.code());
        assertStillAnswers(channel);
      }
      backend.awaitNoSession(CLOSED);
      // Without: nobody waits for an answer, so the connection ends.
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(header(FrontendRequest.GET_FEATURES.code(), 0x1, 0), stray.fd());
        assertTrue(channel.isClosedByPeer(CLOSED), "connection closed");
      }
    }
  }

  @Test
  void unknownRequestCodes() throws Exception {
    for (int code : new int[] {0, 45, 99, 1000, -1}) {
      try (FrontendChannel channel = connectServed()) {
        // NEED_REPLY, with and without a payload (which is skipped): a failure reply.
        channel.sendRaw(header(code, 0x9, 0));
        assertFailureReply(channel, code);
        channel.sendRaw(concat(header(code, 0x9, 24), new byte[24]));
        assertFailureReply(channel, code);
        assertStillAnswers(channel);
        // Without NEED_REPLY nobody waits for an answer: a log line, and the connection goes on.
        channel.sendRaw(concat(header(code, 0x1, 16), new byte[16]));
        assertFalse(channel.isClosedByPeer(KEPT), "code " + code + ": connection kept");
        assertStillAnswers(channel);
      }
      backend.awaitNoSession(CLOSED);
    }
    // Known to the codec, not served by bounce: refused where a reply was asked for.
    try (FrontendChannel channel = connectServed();
        EventFd log = EventFd.create()) {
      channel.sendRaw(header(FrontendRequest.SET_LOG_FD.code(), 0x9, 0), log.fd());
      assertFailureReply(channel, FrontendRequest.SET_LOG_FD.code());
      channel.sendRaw(concat(header(FrontendRequest.NET_SET_MTU.code(), 0x9, 8), u64(1500)));
      assertFailureReply(channel, FrontendRequest.NET_SET_MTU.code());
      assertStillAnswers(channel);
      // A request whose own reply is a u64 status gets the failure status, NEED_REPLY or not (QEMU
      // with a vIOMMU sends IOTLB_MSG to a backend that offered ACCESS_PLATFORM).
      for (int flags : new int[] {0x9, 0x1}) {
        channel.sendRaw(concat(header(FrontendRequest.IOTLB_MSG.code(), flags, 32), new byte[32]));
        assertFailureReply(channel, FrontendRequest.IOTLB_MSG.code());
      }
      assertStillAnswers(channel);
    }
  }

  @Test
  void aFrontendThatClosedBehindAFloodIsGoneWhenTheNextOneConnects() throws Exception {
    // QEMU reconnecting at once: the old connection's end of stream lies behind more requests than
    // one wake-up reads, and the newcomer must not be taken for a second frontend.
    byte[] one = concat(header(FrontendRequest.SET_STATUS.code(), 0x1, 8), u64(0));
    byte[] batch = new byte[one.length * 5000];
    for (int i = 0; i < 5000; i++) System.arraycopy(one, 0, batch, i * one.length, one.length);
    for (int round = 0; round < 3; round++) {
      try (FrontendChannel flooding = connectServed()) {
        flooding.sendRaw(batch);
      }
      try (FrontendChannel next = connectServed()) {
        assertStillAnswers(next);
      }
      backend.awaitNoSession(CLOSED);
    }
  }

  @Test
  void aFailedRequestWithAReplyOfItsOwnEndsTheConnectionEvenWithNeedReply() throws Exception {
    // vhost-user.rst: NEED_REPLY changes nothing for a request that has a reply of its own, and a
    // u64 failure status in its place would read as that reply (here a VringState of ring 1).
    try (FrontendChannel channel = connectServed()) {
      channel.sendRaw(
          concat(header(FrontendRequest.GET_VRING_BASE.code(), 0x9, 8), vringState(7, 0)));
      assertTrue(channel.isClosedByPeer(CLOSED), "connection closed, no reply");
    }
  }

  @Test
  void vringFdsThatAreNotEventfdsAreRefused() throws Exception {
    // A socket at end of stream or a pipe would stay readable as a kick fd and spin the data loop;
    // anything but an eventfd is refused, and closed (the fd count is checked after each case).
    try (Memfd notAnEventfd = Memfd.create("not-an-eventfd", 4096);
        TestFrontend frontend = new TestFrontend(connectServed())) {
      frontend.negotiate(true);
      frontend.shareMemory();
      for (FrontendRequest request :
          new FrontendRequest[] {
            FrontendRequest.SET_VRING_CALL,
            FrontendRequest.SET_VRING_ERR,
            FrontendRequest.SET_VRING_KICK
          }) {
        assertThrows(
            FrontendChannel.Refused.class,
            () -> frontend.channel.ack(request, new VringFdIndex(0, false), notAnEventfd.fd()),
            request.label());
      }
      assertEquals(3, countContaining(backend.warnings(), "not an eventfd"), "warnings");
      frontend.setUpRing(0, TestFrontend.ringAddress(0));
      frontend.echo(0);
    }
  }

  @Test
  void aBlockingErrorEventfdWithAFullCounterCannotStallTheDataLoop() throws Exception {
    // eventfd(2) without EFD_NONBLOCK, its counter one below the maximum: a write of 1 blocks
    // until someone reads. As the error fd of a ring that fails, it would hold the data loop (and
    // the control loop, which waits for it) forever, unless bounce makes it non-blocking.
    try (Fd blocking = Fd.adopt(Libc.eventfd(0, Libc.EFD_CLOEXEC));
        Arena arena = Arena.ofConfined();
        TestFrontend frontend = new TestFrontend(connectServed())) {
      MemorySegment value = arena.allocate(Long.BYTES);
      value.set(ValueLayout.JAVA_LONG_UNALIGNED, 0, 0xffff_ffff_ffff_fffeL);
      Libc.write(blocking.value(), value, Long.BYTES);
      try {
        frontend.negotiate(true);
        frontend.shareMemory();
        VringAddress good = TestFrontend.ringAddress(0);
        VringAddress misaligned =
            new VringAddress(0, 0, good.descriptor() + 8, good.used(), good.available(), 0);
        frontend.channel.ack(
            FrontendRequest.SET_VRING_NUM, new VringState(0, TestFrontend.QUEUE_SIZE));
        frontend.channel.ack(FrontendRequest.SET_VRING_ADDR, misaligned);
        frontend.channel.ack(FrontendRequest.SET_VRING_ERR, new VringFdIndex(0, false), blocking);
        frontend.setVringFd(FrontendRequest.SET_VRING_KICK, 0, frontend.kick[0]); // guest error
        assertStillAnswers(frontend.channel);
        frontend.setUpRing(1, TestFrontend.ringAddress(1));
        frontend.echo(1);
      } finally {
        // Had the loop blocked, this read (the counter is never 0) lets it go on: the test fails
        // on its timeout instead of hanging every test after it.
        Libc.read(blocking.value(), value, Long.BYTES);
      }
    }
  }

  @Test
  void aSemaphoreKickEventfdWithAFullCounterCannotSpinTheDataLoop() throws Exception {
    // eventfd(2) with EFD_SEMAPHORE: a read takes only 1 from the counter, so one write of the
    // frontend's leaves it readable for about 2^64 reads.
    try (Fd semaphore = Fd.adopt(Libc.eventfd(0, Libc.EFD_SEMAPHORE | Libc.EFD_CLOEXEC));
        Arena arena = Arena.ofConfined();
        TestFrontend frontend = new TestFrontend(connectServed())) {
      MemorySegment value = arena.allocate(Long.BYTES);
      value.set(ValueLayout.JAVA_LONG_UNALIGNED, 0, 0xffff_ffff_ffff_fffeL);
      Libc.write(semaphore.value(), value, Long.BYTES);
      frontend.negotiate(true);
      frontend.shareMemory();
      frontend.setUpRing(0, TestFrontend.ringAddress(0));
      frontend.channel.ack(FrontendRequest.SET_VRING_KICK, new VringFdIndex(0, false), semaphore);
      long before = backendCpuNanos();
      Thread.sleep(2000);
      long used = backendCpuNanos() - before;
      assertTrue(
          used < TimeUnit.MILLISECONDS.toNanos(400),
          "the backend's loops used " + used / 1_000_000 + " ms of CPU in 2 s");
      frontend.setUpRing(1, TestFrontend.ringAddress(1));
      frontend.echo(1);
    }
  }

  /** CPU time of the backend's event loop threads (the fixture's, named test-backend-*). */
  private static long backendCpuNanos() {
    ThreadMXBean threads = ManagementFactory.getThreadMXBean();
    long total = 0;
    for (Thread t : Thread.getAllStackTraces().keySet()) {
      if (t.getName().startsWith("test-backend")) total += threads.getThreadCpuTime(t.threadId());
    }
    return total;
  }

  @Test
  void aFloodOfRequestsLeavesTheControlLoopToOthers() throws Exception {
    // SET_STATUS needs no reply: a frontend can write them faster than they are handled. Another
    // session on the same control loop (here: a task on it) must still get its turn.
    byte[] one = concat(header(FrontendRequest.SET_STATUS.code(), 0x1, 8), u64(0));
    byte[] batch = new byte[one.length * 1000];
    for (int i = 0; i < 1000; i++) System.arraycopy(one, 0, batch, i * one.length, one.length);
    try (FrontendChannel flooding = connectServed()) {
      AtomicBoolean stop = new AtomicBoolean();
      AtomicLong written = new AtomicLong(); // the bytes of the flood in the socket or handled
      Thread writer =
          BlockedThreads.start(
              () -> {
                try {
                  while (!stop.get()) {
                    flooding.sendRaw(batch);
                    written.addAndGet(batch.length);
                  }
                } catch (IOException e) {
                  // the test ends the flood by closing the channel
                }
              });
      try {
        // The flood is under way once the writer waits for room: a socket buffer of requests is
        // yet to be handled, and the writer adds more only as the server handles them.
        BlockedThreads.awaitBlocked(writer, Syscall.SENDMSG, Duration.ofSeconds(30));
        for (int i = 0; i < 5; i++) {
          // A second connection makes the server read the first one's requests (its end of
          // stream could be among them): that read has a bound too.
          FrontendChannel.connect(backend.path).close();
          long submitted = written.get();
          long ran = backend.controlLoop().submit(written::get).get(30, TimeUnit.SECONDS);
          // Measured in the flood's bytes, not in seconds: on a fair loop the task waits for one
          // turn of the flooding session (64 requests of 20 bytes) however busy the machine, and
          // 1 MiB is slack; a loop that read a session until its socket ran dry let hundreds of
          // MiB pass first.
          assertTrue(
              ran - submitted < 1 << 20,
              "task " + i + " waited for " + (ran - submitted) + " bytes of the flood");
        }
      } finally {
        stop.set(true);
        flooding.close();
        writer.join();
      }
    }
  }

  @Test
  void aFrontendRepeatingAMistakeCannotFloodTheLog() throws Exception {
    try (FrontendChannel channel = connectServed()) {
      for (int i = 0; i < 1500; i++) {
        channel.sendRaw(header(99, 0x9, 0));
        assertFailureReply(channel, 99);
      }
      assertStillAnswers(channel);
    }
    List<String> refused =
        backend.warnings().stream().filter(l -> l.contains("refused a malformed request")).toList();
    assertEquals(21, refused.size(), "the first 20, then the 1000th");
    assertTrue(refused.getLast().contains("(1000 such lines so far)"), refused.getLast());
  }

  @Test
  void aFloodOfMalformedRequestsDoesNotHideAFailedOne() throws Exception {
    try (TestFrontend frontend = new TestFrontend(connectServed())) {
      for (int i = 0; i < 100; i++) {
        frontend.channel.sendRaw(header(99, 0x9, 0));
        assertFailureReply(frontend.channel, 99);
      }
      frontend.negotiate(true);
      assertThrows(
          FrontendChannel.Refused.class,
          () -> frontend.channel.ack(FrontendRequest.SET_VRING_NUM, new VringState(0, 65536)));
      assertStillAnswers(frontend.channel);
    }
    List<String> warnings = backend.warnings();
    assertEquals(
        20, warnings.stream().filter(l -> l.contains("refused a malformed request")).count());
    assertTrue(
        warnings.stream().anyMatch(l -> l.contains("SET_VRING_NUM") && l.contains("65536")),
        () -> "the failed request's line is kept: " + warnings);
  }

  @Test
  void requestsBeforeSetOwnerAreServed() throws Exception {
    try (TestFrontend frontend = new TestFrontend(connectServed())) {
      frontend.negotiate(false);
      frontend.shareMemory();
      for (int i = 0; i < TestFrontend.QUEUES; i++) {
        frontend.setUpRing(i, TestFrontend.ringAddress(i));
        frontend.echo(i);
        frontend.echo(i);
      }
      assertEquals(2, frontend.stop(0));
      assertEquals(2, frontend.stop(1));
    }
  }

  @Test
  void vringNumNotAPowerOfTwoOrOverTheMaximumIsRefused() throws Exception {
    try (TestFrontend frontend = new TestFrontend(connectServed())) {
      frontend.negotiate(true);
      frontend.shareMemory();
      for (long num : new long[] {0, 3, 100, 255, 257, 512, 32768, 65536, 0xffff_ffffL}) {
        FrontendChannel.Refused refused =
            assertThrows(
                FrontendChannel.Refused.class,
                () -> frontend.channel.ack(FrontendRequest.SET_VRING_NUM, new VringState(0, num)),
                "SET_VRING_NUM " + num);
        assertNotEquals(0, refused.status());
      }
      for (int i = 0; i < TestFrontend.QUEUES; i++) {
        frontend.setUpRing(i, TestFrontend.ringAddress(i));
        frontend.echo(i);
      }
    }
  }

  @Test
  void ringOutsideMemoryDoesNotStartAndSignalsItsErrorEventfd() throws Exception {
    long end = TestFrontend.USER_BASE + TestFrontend.MEMORY_SIZE;
    VringAddress good = TestFrontend.ringAddress(0);
    VringAddress[] bad = {
      // every part past the end of memory
      new VringAddress(0, 0, end + 0x10000, end + 0x12000, end + 0x11000, 0),
      // the used ring straddles the end
      new VringAddress(0, 0, good.descriptor(), end - 0x100, good.available(), 0),
      // below the region
      new VringAddress(0, 0, TestFrontend.USER_BASE - 0x10000, good.used(), good.available(), 0),
      // misaligned descriptor table
      new VringAddress(0, 0, good.descriptor() + 8, good.used(), good.available(), 0),
    };
    for (VringAddress address : bad) {
      long servedBefore = echo.served();
      try (TestFrontend frontend = new TestFrontend(connectServed())) {
        frontend.negotiate(true);
        frontend.shareMemory();
        frontend.configureRing(0, address); // every step acknowledged: the error is the guest's
        DriverRing.awaitSignal(frontend.err[0], TestFrontend.TIMEOUT, "ring 0 error eventfd");
        frontend.kick[0].signal();
        // The other ring is not affected.
        frontend.setUpRing(1, TestFrontend.ringAddress(1));
        frontend.echo(1);
        assertEquals(servedBefore + 1, echo.served(), "only ring 1 served a chain");
        assertEquals(0, frontend.err[1].drain(), "ring 1 error eventfd");
        assertEquals(0, frontend.stop(0), "ring 0 never consumed anything");
        // Set up afresh on the same connection (a guest driver reloading), the ring works again.
        frontend.setUpRing(0, TestFrontend.ringAddress(0));
        frontend.echo(0);
        assertEquals(1, frontend.stop(0), "ring 0 serves once set up again");
      }
      backend.awaitNoSession(CLOSED);
    }
  }

  /**
   * A frontend can shrink the memfd it shared after SET_MEM_TABLE: the backend's mapping still
   * covers the whole region, but a read past the file's end is SIGBUS, which the JVM turns into
   * InternalError. The first read of a ring is its start (SET_VRING_KICK reads used.idx); escaping
   * there, it would fail the session's request instead of counting as the guest's error.
   */
  @Test
  void ringStartedOnAMemfdTruncatedUnderItsUsedRingStopsWithAGuestError() throws Exception {
    VringAddress ring0 = TestFrontend.ringAddress(0);
    long usedOffset = ring0.used() - TestFrontend.USER_BASE;
    try (TestFrontend frontend = new TestFrontend(connectServed())) {
      int memfd = frontend.memory.fd(0).value();
      frontend.negotiate(true);
      frontend.shareMemory();
      // The descriptor table and the available ring stay in the file, the used ring's page does
      // not. Nothing here may touch that page through the frontend's view either: same JVM.
      Libc.ftruncate(memfd, usedOffset);
      frontend.configureRing(0, ring0); // every step acknowledged: the error is the guest's
      DriverRing.awaitSignal(frontend.err[0], TestFrontend.TIMEOUT, "ring 0 error eventfd");
      assertTrue(
          backend.warnings().stream()
              .anyMatch(l -> l.contains("ring 0 stopped") && l.contains("access faulted")),
          "a memory-fault guest error logged: " + backend.warnings());
      // The session goes on: it answers, and ring 0 stopped without consuming anything.
      assertStillAnswers(frontend.channel);
      assertEquals(0, frontend.stop(0), "ring 0 never consumed anything");
      assertEquals(0, frontend.err[1].drain(), "ring 1 error eventfd");
      // The frontend gives the memory back and sets ring 0 up again: it works, and so does ring 1.
      Libc.ftruncate(memfd, TestFrontend.MEMORY_SIZE);
      for (int i = 0; i < TestFrontend.QUEUES; i++) {
        frontend.setUpRing(i, TestFrontend.ringAddress(i));
        frontend.echo(i);
      }
      assertEquals(1, frontend.stop(0), "ring 0 serves once set up again");
      assertEquals(0, frontend.err[0].drain() + frontend.err[1].drain(), "error eventfds");
    }
  }

  @Test
  void aRunningRingReaddressedOutsideMemoryStopsWithAGuestError() throws Exception {
    long end = TestFrontend.USER_BASE + TestFrontend.MEMORY_SIZE;
    try (TestFrontend frontend = new TestFrontend(connectServed())) {
      frontend.handshake();
      frontend.echo(0);
      frontend.channel.ack(
          FrontendRequest.SET_VRING_ADDR,
          new VringAddress(0, 0, end + 0x10000, end + 0x12000, end + 0x11000, 0));
      DriverRing.awaitSignal(frontend.err[0], TestFrontend.TIMEOUT, "ring 0 error eventfd");
      frontend.echo(1);
      assertEquals(1, frontend.stop(0));
      assertEquals(0, frontend.err[1].drain(), "ring 1 error eventfd");
    }
  }

  @Test
  void ringsStartedWithoutFeaturesDoNotRun() throws Exception {
    long servedBefore = echo.served();
    try (TestFrontend frontend = new TestFrontend(connectServed())) {
      FrontendChannel channel = frontend.channel;
      channel.send(
          FrontendRequest.SET_PROTOCOL_FEATURES, new U64(TestFrontend.PROTOCOL_FEATURES), false);
      channel.ack(FrontendRequest.SET_OWNER);
      frontend.shareMemory();
      frontend.setUpRing(0, TestFrontend.ringAddress(0)); // no SET_FEATURES yet
      frontend.rings[0].postEcho(new byte[] {1, 2, 3}, 16);
      frontend.kick[0].signal();
      Thread.sleep(100);
      assertEquals(0, frontend.rings[0].usedIndex(), "no device, no service");
      assertEquals(servedBefore, echo.served());
      assertStillAnswers(channel);
      // Features negotiated late: the ring that was set up runs from then on, the waiting chain
      // first.
      channel.ack(FrontendRequest.SET_FEATURES, new U64(TestFrontend.FEATURES));
      long deadline = System.nanoTime() + TestFrontend.TIMEOUT.toNanos();
      while (frontend.rings[0].usedIndex() != 1 && System.nanoTime() - deadline < 0) {
        Thread.sleep(1);
      }
      assertEquals(1, frontend.rings[0].usedIndex(), "the waiting chain was served");
      frontend.nextUsed[0] = 1;
      frontend.echo(0);
      assertEquals(servedBefore + 2, echo.served());
      assertEquals(0, frontend.err[0].drain(), "ring 0 error eventfd");
    }
  }

  @Test
  void removingTheRegionOfARunningRingIsRefusedAndTheRingKeepsWorking() throws Exception {
    MemoryRegionDescription rings =
        new MemoryRegionDescription(
            TestFrontend.GUEST_BASE, TestFrontend.MEMORY_SIZE, TestFrontend.USER_BASE, 0);
    MemoryRegionDescription spare =
        new MemoryRegionDescription(
            TestFrontend.GUEST_BASE + (64 << 20), 1 << 20, TestFrontend.USER_BASE + (64 << 20), 0);
    try (TestFrontend frontend =
        new TestFrontend(connectServed(), TestMemory.of(List.of(rings, spare)))) {
      FrontendChannel channel = frontend.channel;
      frontend.negotiate(true);
      assertEquals(
          GuestAddressSpace.MAX_REGIONS, channel.getU64(FrontendRequest.GET_MAX_MEM_SLOTS));
      for (int r = 0; r < 2; r++) {
        channel.ack(
            FrontendRequest.ADD_MEM_REG,
            new SingleMemoryRegion(frontend.memory.description(r)),
            frontend.memory.fd(r));
      }
      for (int i = 0; i < TestFrontend.QUEUES; i++) {
        frontend.setUpRing(i, TestFrontend.ringAddress(i));
        frontend.echo(i);
      }
      FrontendChannel.Refused refused =
          assertThrows(
              FrontendChannel.Refused.class,
              () -> channel.ack(FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(rings)));
      assertNotEquals(0, refused.status());
      for (int i = 0; i < TestFrontend.QUEUES; i++) frontend.echo(i);
      // A region no ring uses may go; the rings go on.
      channel.ack(FrontendRequest.REM_MEM_REG, new SingleMemoryRegion(spare));
      for (int i = 0; i < TestFrontend.QUEUES; i++) frontend.echo(i);
      assertEquals(0, frontend.err[0].drain() + frontend.err[1].drain(), "error eventfds");
    }
  }

  @Test
  void peerClosingMidMessageWithFdsInFlightLeaksNothing() throws Exception {
    try (Memfd memfd = Memfd.create("in-flight", 1 << 20);
        EventFd a = EventFd.create();
        EventFd b = EventFd.create()) {
      byte[] memTable =
          concat(
              header(FrontendRequest.SET_MEM_TABLE.code(), 0x9, 40),
              memoryTable(TestFrontend.GUEST_BASE, 1 << 20, TestFrontend.USER_BASE));
      // mid-header
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(Arrays.copyOf(memTable, 5), memfd.fd(), a.fd());
      }
      backend.awaitNoSession(CLOSED);
      // the header whole, none of the payload
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(Arrays.copyOf(memTable, Header.SIZE), memfd.fd());
      }
      backend.awaitNoSession(CLOSED);
      // mid-payload, the fds with the header and more with the payload's first part
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(Arrays.copyOf(memTable, Header.SIZE + 3), memfd.fd());
        channel.sendRaw(
            Arrays.copyOfRange(memTable, Header.SIZE + 3, Header.SIZE + 20), a.fd(), b.fd());
      }
      backend.awaitNoSession(CLOSED);
      // a whole message before it is fine; the next one breaks off
      try (FrontendChannel channel = connectServed()) {
        channel.sendRaw(
            concat(header(FrontendRequest.SET_VRING_CALL.code(), 0x1, 8), u64(0)), a.fd());
        channel.sendRaw(
            Arrays.copyOf(
                concat(header(FrontendRequest.SET_VRING_KICK.code(), 0x1, 8), u64(1)), 15),
            b.fd());
      }
    }
  }

  @Test
  void aSecondConcurrentFrontendIsRefusedAndTheFirstKeepsWorking() throws Exception {
    try (TestFrontend first = new TestFrontend(connectServed())) {
      first.handshake();
      first.echo(0);
      try (FrontendChannel second = FrontendChannel.connect(backend.path)) {
        assertTrue(second.isClosedByPeer(CLOSED), "the second frontend is refused");
      }
      first.echo(0);
      first.echo(1);
      assertEquals(2, first.stop(0));
      assertEquals(1, first.stop(1));
    }
  }

  @Test
  void thousandConnectDisconnectCycles() throws Exception {
    try (TestMemory memory = TestFrontend.defaultMemory();
        EventFd eventFd = EventFd.create()) {
      for (int i = 0; i < 1000; i++) {
        switch (i % 5) {
          case 0 -> FrontendChannel.connect(backend.path).close();
          case 1 -> {
            try (FrontendChannel channel = connectServed()) {
              channel.send(FrontendRequest.SET_OWNER, false);
              channel.send(
                  FrontendRequest.SET_VRING_CALL, new VringFdIndex(0, false), false, eventFd.fd());
            }
          }
          case 2 -> {
            try (FrontendChannel channel = connectServed()) {
              channel.ack(FrontendRequest.SET_MEM_TABLE, memory.table(), memory.fds());
              channel.ack(FrontendRequest.SET_VRING_NUM, new VringState(1, 64));
              channel.ack(FrontendRequest.SET_VRING_ADDR, TestFrontend.ringAddress(1));
              channel.send(
                  FrontendRequest.SET_VRING_KICK, new VringFdIndex(1, false), true, eventFd.fd());
              // closed without waiting for the ack, with the ring started
            }
          }
          case 3 -> {
            try (FrontendChannel channel = connectServed()) {
              channel.sendRaw(
                  Arrays.copyOf(header(FrontendRequest.SET_VRING_ERR.code(), 1, 8), 9),
                  eventFd.fd(),
                  memory.fd(0));
            }
          }
          default -> {
            try (FrontendChannel channel = FrontendChannel.connect(backend.path)) {
              channel.sendRaw(header(FrontendRequest.SET_OWNER.code(), 0x1, 0));
            }
          }
        }
      }
    }
    backend.awaitNoSession(CLOSED);
    OpenFds.assertBackTo(baseline);
  }

  // ---- helpers ----

  /**
   * A new connection, and a GET_FEATURES round trip that proves the backend serves it. No retry:
   * every earlier connection of these tests has been closed by the time the next one is made, so
   * the backend must never take it for a second frontend, not even when it has not yet read the
   * earlier one's end (or accepted it at all).
   */
  static FrontendChannel connectServed() throws Exception {
    FrontendChannel channel = FrontendChannel.connect(backend.path);
    try {
      channel.getU64(FrontendRequest.GET_FEATURES);
      return channel;
    } catch (IOException | RuntimeException | Error e) {
      channel.close();
      throw e;
    }
  }

  /** A normal handshake on a fresh connection, both rings echo, and the session ends. */
  static void assertServing() throws Exception {
    try (TestFrontend frontend = new TestFrontend(connectServed())) {
      frontend.handshake();
      frontend.echo(0);
      frontend.echo(1);
      assertEquals(1, frontend.stop(0));
      assertEquals(1, frontend.stop(1));
      assertEquals(0, frontend.err[0].drain() + frontend.err[1].drain(), "error eventfds");
    }
    backend.awaitNoSession(CLOSED);
  }

  private static void assertFailureReply(FrontendChannel channel, int code) throws IOException {
    try (FrontendChannel.Frame reply = channel.receiveFrame(TestFrontend.TIMEOUT)) {
      assertEquals(0x5, reply.header().flags(), "failure reply flags (exactly 0x5)");
      assertEquals(code, reply.header().request(), "failure reply code");
      assertEquals(U64.SIZE, reply.header().size(), "failure reply size");
      assertEquals(List.of(), reply.fds(), "failure reply fds");
      long status = ByteBuffer.wrap(reply.payload()).order(ByteOrder.LITTLE_ENDIAN).getLong();
      assertNotEquals(0, status, "failure status");
    }
  }

  private static long countContaining(List<String> lines, String text) {
    return lines.stream().filter(line -> line.contains(text)).count();
  }

  /** The connection is still in step: a request gets its proper reply, and nothing else is due. */
  private static void assertStillAnswers(FrontendChannel channel) throws IOException {
    assertEquals(TestFrontend.QUEUES, channel.getU64(FrontendRequest.GET_QUEUE_NUM));
    assertFalse(channel.awaitInput(QUIET), "nothing more to read");
  }

  private static List<EventFd> eventFds(int count) throws Exception {
    List<EventFd> fds = new ArrayList<>();
    try {
      for (int i = 0; i < count; i++) fds.add(EventFd.create());
      return fds;
    } catch (Exception e) {
      fds.forEach(EventFd::close);
      throw e;
    }
  }

  static byte[] header(int code, int flags, int size) {
    return ByteBuffer.allocate(Header.SIZE)
        .order(ByteOrder.LITTLE_ENDIAN)
        .putInt(code)
        .putInt(flags)
        .putInt(size)
        .array();
  }

  static byte[] u64(long value) {
    return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(value).array();
  }

  static byte[] vringState(int index, int num) {
    return ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putInt(index).putInt(num).array();
  }

  static byte[] memoryTable(long guest, long size, long user) {
    return ByteBuffer.allocate(40)
        .order(ByteOrder.LITTLE_ENDIAN)
        .putInt(1)
        .putInt(0)
        .putLong(guest)
        .putLong(size)
        .putLong(user)
        .putLong(0)
        .array();
  }

  static byte[] concat(byte[] a, byte[] b) {
    byte[] both = Arrays.copyOf(a, a.length + b.length);
    System.arraycopy(b, 0, both, a.length, b.length);
    return both;
  }
}
