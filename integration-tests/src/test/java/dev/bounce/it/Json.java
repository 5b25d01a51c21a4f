package dev.bounce.it;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A strict JSON reader (RFC 8259) for checking what the launcher prints: objects become maps,
 * arrays lists, numbers doubles. Anything that is not exactly one JSON value, surrounded by
 * whitespace at most, is refused with the position of the fault.
 */
final class Json {
  private final String text;
  private int at;

  private Json(String text) {
    this.text = text;
  }

  static Object parse(String text) {
    Json json = new Json(text);
    json.space();
    Object value = json.value();
    json.space();
    if (json.at != text.length()) throw json.fault("text after the value");
    return value;
  }

  @SuppressWarnings("unchecked")
  static Map<String, Object> object(String text) {
    if (parse(text) instanceof Map<?, ?> map) return (Map<String, Object>) map;
    throw new IllegalArgumentException("not a JSON object: " + text);
  }

  private Object value() {
    if (at >= text.length()) throw fault("a value expected");
    char c = text.charAt(at);
    return switch (c) {
      case '{' -> object();
      case '[' -> array();
      case '"' -> string();
      case 't' -> word("true", Boolean.TRUE);
      case 'f' -> word("false", Boolean.FALSE);
      case 'n' -> word("null", null);
      default -> number();
    };
  }

  private Map<String, Object> object() {
    Map<String, Object> map = new LinkedHashMap<>();
    at++;
    space();
    if (peek('}')) return map;
    while (true) {
      space();
      if (at >= text.length() || text.charAt(at) != '"') throw fault("a key expected");
      String key = string();
      space();
      expect(':');
      space();
      if (map.put(key, value()) != null) throw fault("duplicate key " + key);
      space();
      if (peek('}')) return map;
      expect(',');
    }
  }

  private List<Object> array() {
    List<Object> list = new ArrayList<>();
    at++;
    space();
    if (peek(']')) return list;
    while (true) {
      space();
      list.add(value());
      space();
      if (peek(']')) return list;
      expect(',');
    }
  }

  private String string() {
    StringBuilder s = new StringBuilder();
    at++;
    while (true) {
      if (at >= text.length()) throw fault("unterminated string");
      char c = text.charAt(at++);
      if (c == '"') return s.toString();
      if (c < 0x20) throw fault("control character in a string");
      if (c != '\\') {
        s.append(c);
        continue;
      }
      if (at >= text.length()) throw fault("unterminated escape");
      char e = text.charAt(at++);
      switch (e) {
        case '"', '\\', '/' -> s.append(e);
        case 'b' -> s.append('\b');
        case 'f' -> s.append('\f');
        case 'n' -> s.append('\n');
        case 'r' -> s.append('\r');
        case 't' -> s.append('\t');
        case 'u' -> {
          if (at + 4 > text.length()) throw fault("short \\u escape");
          s.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
          at += 4;
        }
        default -> throw fault("bad escape \\" + e);
      }
    }
  }

  private Object word(String word, Object value) {
    if (!text.startsWith(word, at)) throw fault(word + " expected");
    at += word.length();
    return value;
  }

  private Double number() {
    int start = at;
    if (peek('-')) {
      // sign taken
    }
    if (peek('0')) {
      // a lone zero: no digits may follow
    } else {
      digits(true);
    }
    if (peek('.')) digits(true);
    if (at < text.length() && (text.charAt(at) == 'e' || text.charAt(at) == 'E')) {
      at++;
      if (!peek('+')) peek('-');
      digits(true);
    }
    return Double.parseDouble(text.substring(start, at));
  }

  private void digits(boolean required) {
    int start = at;
    while (at < text.length() && Character.isDigit(text.charAt(at))) at++;
    if (required && at == start) throw fault("a digit expected");
  }

  private boolean peek(char c) {
    if (at < text.length() && text.charAt(at) == c) {
      at++;
      return true;
    }
    return false;
  }

  private void expect(char c) {
    if (!peek(c)) throw fault("'" + c + "' expected");
  }

  private void space() {
    while (at < text.length() && " \t\r\n".indexOf(text.charAt(at)) >= 0) at++;
  }

  private IllegalArgumentException fault(String what) {
    return new IllegalArgumentException(
        "not valid JSON at offset " + at + ": " + what + " in: " + text);
  }
}
