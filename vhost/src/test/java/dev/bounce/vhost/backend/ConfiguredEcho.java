package dev.bounce.vhost.backend;

import dev.bounce.vhost.spi.DeviceContext;
import dev.bounce.vhost.spi.VirtioDevice;
import dev.bounce.vhost.testdevice.EchoDevice;
import dev.bounce.vhost.virtq.SplitQueue;
import dev.bounce.vhost.virtq.VirtqueueException;
import java.util.concurrent.CompletableFuture;

/**
 * The {@link EchoDevice} offering the device feature bits of the device a recording was made with
 * (net's MRG_RXBUF, CSUM, ...), so that the recorded frontend's SET_FEATURES is one it could have
 * sent to bounce, and telling a test the {@link DeviceContext} the engine activates it with.
 * Everything else is the echo device's.
 */
final class ConfiguredEcho implements VirtioDevice {
  final EchoDevice echo;
  final CompletableFuture<DeviceContext> context = new CompletableFuture<>();
  private final long features;

  ConfiguredEcho(int queues, int maxQueueSize, long features) {
    this.echo = new EchoDevice(queues, maxQueueSize);
    this.features = features;
  }

  @Override
  public int deviceId() {
    return echo.deviceId();
  }

  @Override
  public String name() {
    return echo.name();
  }

  @Override
  public long deviceFeatures() {
    return features;
  }

  @Override
  public int queueCount() {
    return echo.queueCount();
  }

  @Override
  public int maxQueueSize() {
    return echo.maxQueueSize();
  }

  @Override
  public byte[] config() {
    return echo.config();
  }

  @Override
  public void activate(DeviceContext activated) {
    echo.activate(activated);
    context.complete(activated);
  }

  @Override
  public void queueStarted(int index, SplitQueue queue) {
    echo.queueStarted(index, queue);
  }

  @Override
  public void process(int index, SplitQueue queue) throws VirtqueueException {
    echo.process(index, queue);
  }

  @Override
  public void queueStopped(int index) {
    echo.queueStopped(index);
  }

  @Override
  public void reset() {
    echo.reset();
  }
}
