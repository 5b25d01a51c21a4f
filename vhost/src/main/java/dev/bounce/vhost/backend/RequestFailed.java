package dev.bounce.vhost.backend;

/**
 * A frontend request bounce will not carry out (a bad index, a ring that is running, a feature not
 * offered). The session logs it and answers with a failure where the frontend waits for one.
 */
final class RequestFailed extends Exception {
  RequestFailed(String message) {
    super(message, null, false, false);
  }
}
