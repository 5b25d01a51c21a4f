package dev.bounce.device.vsock;

/** A host side for tests: every guest connection goes to the one endpoint, which learns of it. */
record OneEndpoint(OneEndpoint.Endpoint endpoint) implements HostSide {
  /** A test's host end: it says what it does with bytes; what it does not override it ignores. */
  abstract static class Endpoint implements HostSide.HostEndpoint {
    /** The connection the guest made last; set on the data loop. */
    volatile VsockConnection connection;

    @Override
    public void readable(VsockConnection c) {}

    @Override
    public void writable(VsockConnection c) {}

    @Override
    public void peerShutdown(VsockConnection c, int flags) {}

    @Override
    public void closed(VsockConnection c) {}
  }

  @Override
  public void attach(VsockDevice device) {}

  @Override
  public HostEndpoint guestConnect(VsockConnection connection) {
    endpoint.connection = connection;
    connection.accept();
    return endpoint;
  }

  @Override
  public void detach() {}
}
