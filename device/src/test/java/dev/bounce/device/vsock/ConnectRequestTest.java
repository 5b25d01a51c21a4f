package dev.bounce.device.vsock;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The CONNECT line of the hybrid-vsock host protocol, read as vhost-device-vsock (its
 * read_local_stream_port) and Firecracker (its muxer) read it, so that their host applications work
 * unchanged.
 */
class ConnectRequestTest {
  @ParameterizedTest(name = "''{0}''")
  @CsvSource(
      delimiterString = "=>",
      value = {
        "'CONNECT 1234' => 1234",
        "'connect 1234' => 1234",
        "'Connect 1234\r' => 1234",
        "'  CONNECT   01234  ' => 1234",
        "'CONNECT 1234 and more words' => 1234",
        "'CONNECT 4294967295' => 4294967295"
      })
  void aConnectLineNamesItsPort(String line, long port) {
    assertEquals(port, ConnectRequest.guestPort(line));
  }

  @ParameterizedTest(name = "''{0}''")
  @ValueSource(
      strings = {
        "HELLO 1234",
        "CONNECT",
        "CONNECT five",
        "CONNECT -1",
        "CONNECT 4294967296",
        "CONNECT1234",
        ""
      })
  void anythingElseIsNotOne(String line) {
    assertEquals(-1, ConnectRequest.guestPort(line));
  }
}
