package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.vhost.backend.BackendServer;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * The vsock device on the real engine ({@link BackendServer}) with the {@link LoopbackHost}, driven
 * by the fake frontend and {@link VsockDriver} over a real socket, memfds and eventfds.
 */
@Timeout(value = 60, unit = TimeUnit.SECONDS)
class VsockDeviceTest {
  static final int ECHO_PORT = 1234;
  static final int BUFFER = 64 * 1024;
  static final Duration TIMEOUT = Duration.ofSeconds(20);

  @TempDir Path dir;

  private VsockRig rig;
  private LoopbackHost host;
  private VsockDevice device;
  private VsockDriver driver;

  @AfterEach
  void tearDown() {
    if (rig != null) rig.close();
  }

  private void start(int queueSize) throws Exception {
    host = new LoopbackHost().echo(ECHO_PORT);
    rig = new VsockRig(dir, queueSize, BUFFER, 64, loop -> host);
    device = rig.device;
    driver = rig.driver;
  }

  private static byte[] random(int n, long seed) {
    byte[] b = new byte[n];
    new Random(seed).nextBytes(b);
    return b;
  }

  /** Sends {@code data} and reads the echo at the same time, as far as credit allows. */
  private byte[] echo(VsockDriver.Socket s, byte[] data) throws IOException {
    return VsockRig.echo(driver, s, data, TIMEOUT);
  }

  @Test
  void configIsTheGuestCidAndSeqpacketIsNegotiated() throws Exception {
    start(256);
    assertArrayEquals(new byte[] {3, 0, 0, 0, 0, 0, 0, 0}, device.config());
    assertEquals(19, device.deviceId());
    assertEquals(3, device.queueCount());
    assertTrue(driver.seqpacketNegotiated());
  }

  @Test
  void streamBytesFlowBothWaysIntact() throws Exception {
    start(256);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    byte[] data = random(4 << 20, 1);
    byte[] back = echo(s, data);
    assertArrayEquals(data, back);
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, device.guestErrors());
  }

  @Test
  void aPortNobodyListensOnIsRefusedWithRst() throws Exception {
    start(256);
    IOException e =
        assertThrows(
            IOException.class, () -> driver.connect(4321, VsockHeader.TYPE_STREAM, TIMEOUT));
    assertTrue(e.getMessage().contains("refused"), e.getMessage());
    // The device keeps serving.
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    assertArrayEquals(random(1000, 2), echo(s, random(1000, 2)));
  }

  @Test
  void shutdownIsPassedOnAndAFullShutdownEndsInRst() throws Exception {
    start(256);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    assertArrayEquals(random(5000, 3), echo(s, random(5000, 3)));
    s.shutdown(VsockHeader.SHUTDOWN_SEND);
    // The echo host shuts its sending side when the guest's ends.
    s.awaitPeerShutdown(VsockHeader.SHUTDOWN_SEND, TIMEOUT);
    s.shutdown(VsockHeader.SHUTDOWN_BOTH);
    s.awaitReset(TIMEOUT);
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  @Test
  void aGuestThatStopsReceivingStallsItsConnectionWithinTheCredit() throws Exception {
    start(16); // 16 rx buffers hold less than one buffer's worth of credit
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    driver.postRxBuffers(false);
    byte[] data = random(1 << 20, 4);
    int sent = VsockRig.sendUntilStalled(driver, s, data, 16 * 1024);
    // Stalled: at most our own buffer, the device's two and the rx buffers in flight.
    assertTrue(sent < data.length, "nothing stalled");
    assertTrue(sent <= 3 * BUFFER + 16 * VsockDriver.RX_BUFFER_SIZE, "sent " + sent);
    assertEquals(0, s.credit(), "the device gives no more credit");
    assertTrue(s.available() <= BUFFER);
    // Once the guest receives again, everything arrives intact.
    driver.postRxBuffers(true);
    ByteArrayOutputStream back = new ByteArrayOutputStream();
    byte[] chunk = new byte[8192];
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (back.size() < data.length) {
      boolean progress = false;
      if (sent < data.length) {
        int n = s.trySend(data, sent, Math.min(16 * 1024, data.length - sent), false);
        sent += n;
        progress = n > 0;
      }
      int got = s.read(chunk, 0, chunk.length);
      back.write(chunk, 0, got);
      if (!progress && got == 0) {
        assertTrue(System.nanoTime() < deadline, "stalled after resuming: " + back.size());
        driver.pump(10);
      }
    }
    assertArrayEquals(data, back.toByteArray());
    assertEquals(0, driver.creditViolations());
    assertEquals(0, device.guestErrors());
  }

  @Test
  void seqpacketKeepsMessageBoundaries() throws Exception {
    start(256);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_SEQPACKET, TIMEOUT);
    int[] sizes = {1, 100, 3732, 3733, 10_000, 17, 40_000, 2};
    for (int k = 0; k < sizes.length; k++) {
      s.sendMessage(random(sizes[k], 10 + k), TIMEOUT);
    }
    for (int k = 0; k < sizes.length; k++) {
      assertArrayEquals(random(sizes[k], 10 + k), s.readMessage(TIMEOUT), "message " + k);
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
  }

  @Test
  void seqpacketMessagesUpToTheGuestsBufferGoBothWays() throws Exception {
    host = new LoopbackHost().echo(ECHO_PORT);
    rig = new VsockRig(dir, 256, 256 * 1024, 64, loop -> host); // Linux's 256 KiB buffers
    device = rig.device;
    driver = rig.driver;
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_SEQPACKET, TIMEOUT);
    int[] sizes = {100_000, 150_000, 200_000, 250_000, 65_537};
    for (int k = 0; k < sizes.length; k++) {
      s.sendMessage(random(sizes[k], 20 + k), TIMEOUT);
      assertArrayEquals(random(sizes[k], 20 + k), s.readMessage(TIMEOUT), "message " + k);
    }
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    assertEquals(0, driver.creditViolations());
  }

  @Test
  void emptySeqpacketMessagesAreDroppedAndCostNothing() throws Exception {
    start(256);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_SEQPACKET, TIMEOUT);
    long errors = device.guestErrors();
    for (int i = 0; i < 100; i++) {
      driver.sendRaw(
          VsockHeader.HOST_CID,
          s.localPort(),
          ECHO_PORT,
          0,
          VsockHeader.TYPE_SEQPACKET,
          Op.RW,
          VsockHeader.SEQ_EOM,
          null);
    }
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (device.guestErrors() < errors + 100) {
      assertTrue(System.nanoTime() < deadline, "guest errors " + device.guestErrors());
      driver.pump(10);
    }
    // The connection goes on, and the next real message is the first the host sees and echoes.
    s.sendMessage(random(500, 40), TIMEOUT);
    assertArrayEquals(random(500, 40), s.readMessage(TIMEOUT));
    assertTrue(s.isOpen());
  }

  @Test
  void malformedPacketsAreAnsweredWithRstAndTheDeviceGoesOn() throws Exception {
    start(256);
    // An unknown op: RST back to the sender's port.
    driver.sendRaw(VsockHeader.HOST_CID, 7000, ECHO_PORT, 0, VsockHeader.TYPE_STREAM, 42, 0, null);
    awaitStrayReset(7000, 1);
    // A control op with a payload length.
    driver.sendRaw(
        VsockHeader.HOST_CID, 7001, ECHO_PORT, 5, VsockHeader.TYPE_STREAM, Op.REQUEST, 0, null);
    awaitStrayReset(7001, 2);
    // RW whose len is more than the chain holds, on an open connection: that connection resets.
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    driver.sendRaw(
        VsockHeader.HOST_CID,
        s.localPort(),
        ECHO_PORT,
        1000,
        VsockHeader.TYPE_STREAM,
        Op.RW,
        0,
        new byte[10]);
    s.awaitReset(TIMEOUT);
    // A chain shorter than a header: counted and dropped.
    long before = device.guestErrors();
    driver.sendShortHeader(20);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (device.guestErrors() < before + 1 && System.nanoTime() < deadline) driver.pump(10);
    assertEquals(before + 1, device.guestErrors());
    // Still serving.
    VsockDriver.Socket t = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    assertArrayEquals(random(20_000, 5), echo(t, random(20_000, 5)));
  }

  @Test
  void aFloodOfMalformedPacketsDoesNotHideARefusedConnection() throws Exception {
    startWithRoomFor(1);
    driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    try (WarningLog log = new WarningLog()) {
      int unknownOp = 42;
      for (int i = 0; i < 100; i++) {
        driver.sendRaw(
            VsockHeader.HOST_CID,
            8000 + i,
            ECHO_PORT,
            0,
            VsockHeader.TYPE_STREAM,
            unknownOp,
            0,
            null);
        awaitStrayReset(8000 + i, i + 1);
      }
      assertEquals(20, log.lines().size(), "the first 20 malformed packets' lines: " + log.lines());
      VsockDriver.Socket refused = driver.startConnect(ECHO_PORT, VsockHeader.TYPE_STREAM);
      refused.awaitReset(TIMEOUT);
      assertTrue(
          log.any("1 connections open or waiting to send their RST; refusing"),
          () -> "the refusal's line is kept: " + log.lines());
    }
  }

  @Test
  void headersWithBadLengthsTypesOrAddressesAreAnsweredWithRst() throws Exception {
    start(256);
    int stream = VsockHeader.TYPE_STREAM;
    // len over the 64 KiB packet limit (the payload need not follow: the header is refused).
    driver.sendRaw(
        VsockHeader.HOST_CID,
        7100,
        ECHO_PORT,
        VsockDevice.MAX_PACKET_PAYLOAD + 1,
        stream,
        Op.RW,
        0,
        null);
    awaitStrayReset(7100, 1);
    // Control ops that claim a payload.
    driver.sendRaw(VsockHeader.HOST_CID, 7101, ECHO_PORT, 8, stream, Op.SHUTDOWN, 3, new byte[8]);
    awaitStrayReset(7101, 2);
    driver.sendRaw(VsockHeader.HOST_CID, 7102, ECHO_PORT, 1, stream, Op.CREDIT_UPDATE, 0, null);
    awaitStrayReset(7102, 3);
    // A socket type that does not exist (1 stream, 2 seqpacket).
    driver.sendRaw(VsockHeader.HOST_CID, 7103, ECHO_PORT, 0, 3, Op.REQUEST, 0, null);
    awaitStrayReset(7103, 4);
    // A CID no guest of this process has (Siblings): answered from that CID, so the driver's
    // socket keyed by CID 5 would see it; no socket has the port here, so it counts as stray.
    driver.sendRaw(5, 7104, ECHO_PORT, 0, stream, Op.REQUEST, 0, null);
    awaitStrayReset(7104, 5);
    // RW on a connection that does not exist.
    driver.sendRaw(VsockHeader.HOST_CID, 7105, ECHO_PORT, 4, stream, Op.RW, 0, new byte[4]);
    awaitStrayReset(7105, 6);
    // The first four are guest errors; a CID nobody has, or RW on no connection, is only refused
    // (the guest may not have seen that connection's RST yet).
    assertEquals(4, device.guestErrors());
    assertEquals(0, device.connectionCount());
    // Still serving.
    VsockDriver.Socket t = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    assertArrayEquals(random(20_000, 15), echo(t, random(20_000, 15)));
  }

  @Test
  void everyEndedConnectionsRstWaitsForRxBuffersAndKeepsItsSlot() throws Exception {
    // More connections end while the guest posts no rx buffers than RSTs for unknown ports are
    // kept (1024): a guest socket whose RST were dropped would wait for ever.
    int count = 1100;
    startWithRoomFor(count);
    List<VsockDriver.Socket> sockets = new ArrayList<>();
    for (int i = 0; i < count; i++) {
      sockets.add(driver.startConnect(ECHO_PORT, VsockHeader.TYPE_STREAM));
    }
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (sockets.stream().anyMatch(VsockDriver.Socket::isConnecting)) {
      assertTrue(System.nanoTime() < deadline, "not all connections were answered");
      driver.pump(10);
    }
    assertTrue(sockets.stream().allMatch(VsockDriver.Socket::isOpen));
    useUpRxBuffers(sockets.getFirst());
    // A full shutdown of a connection with nothing left to forward ends it with an RST.
    for (VsockDriver.Socket s : sockets) s.shutdown(VsockHeader.SHUTDOWN_BOTH);
    while (device.connectionCount() > 0) {
      assertTrue(System.nanoTime() < deadline, "the shutdowns did not end the connections");
      driver.pump(10);
    }
    // Until their RSTs went, the ended connections fill the table: a new one is refused.
    VsockDriver.Socket late = driver.startConnect(ECHO_PORT, VsockHeader.TYPE_STREAM);
    VsockRig.awaitTxTaken(driver, TIMEOUT);
    assertEquals(0, device.connectionCount(), "a connection taken while the table was full");
    driver.postRxBuffers(true);
    for (VsockDriver.Socket s : sockets) s.awaitReset(TIMEOUT);
    late.awaitReset(TIMEOUT);
    assertEquals(0, driver.badPackets(), driver.firstProblem());
    // Their slots are free again.
    VsockDriver.Socket t = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    assertArrayEquals(random(1000, 16), echo(t, random(1000, 16)));
  }

  @Test
  void aRequestReusingAPairDropsTheRstStillWaitingForIt() throws Exception {
    startWithRoomFor(64);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    useUpRxBuffers(s);
    int port = 7777;
    long resetsBefore = driver.resetsForNoSocket();
    // Data for no connection: its RST waits for an rx buffer...
    driver.sendRaw(
        VsockHeader.HOST_CID, port, ECHO_PORT, 1, VsockHeader.TYPE_STREAM, Op.RW, 0, new byte[1]);
    // ...when the guest connects from the same port. The RST belongs to what came before; sent
    // ahead of the RESPONSE, it would reset this connection.
    driver.sendRaw(
        VsockHeader.HOST_CID, port, ECHO_PORT, 0, VsockHeader.TYPE_STREAM, Op.REQUEST, 0, null);
    VsockRig.awaitTxTaken(driver, TIMEOUT);
    assertEquals(2, device.connectionCount());
    driver.postRxBuffers(true);
    // The driver knows no socket on that port: it answers the RESPONSE with RST, which ends it.
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (device.connectionCount() > 1) {
      assertTrue(System.nanoTime() < deadline, "no RESPONSE for the raw REQUEST");
      driver.pump(10);
    }
    assertEquals(resetsBefore, driver.resetsForNoSocket(), "the stale RST reached the guest");
  }

  @Test
  void aRequestReusingThePairOfAnEndedConnectionDropsItsWaitingRst() throws Exception {
    startWithRoomFor(64);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    useUpRxBuffers(s);
    s.shutdown(VsockHeader.SHUTDOWN_BOTH); // bounce ends it; its RST waits for an rx buffer
    VsockRig.awaitTxTaken(driver, TIMEOUT);
    assertEquals(0, device.connectionCount());
    // The guest connects again from the same port: that RST belongs to the connection before.
    long responses = driver.responses();
    driver.sendRaw(
        VsockHeader.HOST_CID,
        s.localPort(),
        ECHO_PORT,
        0,
        VsockHeader.TYPE_STREAM,
        Op.REQUEST,
        0,
        null);
    VsockRig.awaitTxTaken(driver, TIMEOUT);
    driver.postRxBuffers(true);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (driver.responses() == responses) {
      assertTrue(System.nanoTime() < deadline, "no RESPONSE for the new connection");
      driver.pump(10);
    }
    assertFalse(s.wasReset(), "the ended connection's RST came ahead of the new RESPONSE");
    assertEquals(1, device.connectionCount());
  }

  private void startWithRoomFor(int maxConnections) throws Exception {
    host = new LoopbackHost().echo(ECHO_PORT);
    rig = new VsockRig(dir, 16, BUFFER, maxConnections, loop -> host);
    device = rig.device;
    driver = rig.driver;
  }

  /** Stops restocking rx buffers, and has the echo on {@code s} use up every one posted. */
  private void useUpRxBuffers(VsockDriver.Socket s) throws IOException {
    driver.postRxBuffers(false);
    byte[] data = random(BUFFER, 17); // more than the 16 posted buffers hold
    int sent = 0;
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (driver.rxBuffersPosted() > 0) {
      assertTrue(System.nanoTime() < deadline, driver.rxBuffersPosted() + " rx buffers unused");
      if (sent < data.length) sent += s.trySend(data, sent, data.length - sent, false);
      driver.pump(10);
    }
  }

  private void awaitStrayReset(int port, long count) throws IOException {
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (driver.resetsForNoSocket() < count) {
      assertTrue(System.nanoTime() < deadline, "no RST for port " + port);
      driver.pump(10);
    }
    assertEquals(port, driver.lastStrayResetPort());
  }

  @Test
  void theHostConnectsToAGuestListener() throws Exception {
    start(256);
    driver.listen(5000);
    LoopbackHost.Peer[] peer = new LoopbackHost.Peer[1];
    peer[0] = host.connect(40_000, 5000, VsockHeader.TYPE_STREAM);
    VsockDriver.Socket s = driver.accept(5000, TIMEOUT);
    long deadline = System.nanoTime() + TIMEOUT.toNanos();
    while (!peer[0].isConnected()) {
      assertTrue(System.nanoTime() < deadline, "the host never heard RESPONSE");
      driver.pump(10);
    }
    byte[] toGuest = random(200_000, 6);
    peer[0].send(toGuest);
    assertArrayEquals(toGuest, s.readFully(toGuest.length, TIMEOUT));
    byte[] toHost = random(150_000, 7);
    s.send(toHost, TIMEOUT);
    while (peer[0].received().length < toHost.length) {
      assertTrue(System.nanoTime() < deadline + TIMEOUT.toNanos(), "host got too little");
      driver.pump(10);
    }
    assertArrayEquals(toHost, peer[0].received());
    // A guest port nobody listens on: the host's connection is reset.
    LoopbackHost.Peer nobody = host.connect(40_001, 5001, VsockHeader.TYPE_STREAM);
    while (!nobody.isClosed()) {
      assertTrue(System.nanoTime() < deadline + TIMEOUT.toNanos(), "no RST from the guest");
      driver.pump(10);
    }
  }

  @Test
  void aDeviceRestartedUnderARunningGuestSendsTransportReset() throws Exception {
    start(256);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    assertArrayEquals(random(10_000, 30), echo(s, random(10_000, 30)));
    assertEquals(0, driver.transportResets());
    // bounce dies under the running guest; a new one comes up at the same socket.
    Path socket = rig.socket;
    rig.server.close();
    LoopbackHost newHost = new LoopbackHost().echo(ECHO_PORT);
    VsockDevice restarted = new VsockDevice(VsockRig.GUEST_CID, BUFFER, 64, 1024, newHost);
    try (BackendServer second =
        BackendServer.listen(
            socket,
            new BackendServer.Config("vsock", restarted, rig.loops.next(), rig.loops.next()))) {
      rig.session.reconnect(socket);
      long deadline = System.nanoTime() + TIMEOUT.toNanos();
      while (driver.transportResets() == 0) {
        assertTrue(System.nanoTime() < deadline, "no TRANSPORT_RESET from the restarted device");
        driver.pump(10);
      }
      assertTrue(s.wasReset(), "the guest's connection must be gone");
      // The guest connects afresh and the new device serves it.
      VsockDriver.Socket t = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
      assertArrayEquals(random(10_000, 31), echo(t, random(10_000, 31)));
      assertEquals(1, driver.transportResets(), "one restart, one reset");
      assertEquals(0, restarted.guestErrors());
    }
  }

  @Test
  void aFreshGuestGetsNoTransportReset() throws Exception {
    start(256);
    VsockDriver.Socket s = driver.connect(ECHO_PORT, VsockHeader.TYPE_STREAM, TIMEOUT);
    assertArrayEquals(random(1000, 32), echo(s, random(1000, 32)));
    for (int i = 0; i < 20; i++) driver.pump(5);
    assertEquals(0, driver.transportResets());
  }
}
