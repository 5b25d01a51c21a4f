package dev.bounce.pool.testing;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.bounce.pool.GuestRegion;
import dev.bounce.pool.Mapping;
import org.junit.jupiter.api.extension.AfterEachCallback;
import org.junit.jupiter.api.extension.BeforeEachCallback;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * After each test, what it opened is closed again: its fds, its mappings, and the guest memory
 * counted against {@link GuestRegion#PROCESS_LIMIT}. For a test class: {@code @RegisterExtension
 * final NothingLeaked nothingLeaked = new NothingLeaked();}
 */
public final class NothingLeaked implements BeforeEachCallback, AfterEachCallback {
  private int fds;
  private long mappings;
  private long mapped;

  @Override
  public void beforeEach(ExtensionContext context) {
    fds = OpenFds.count();
    mappings = Mapping.liveCount();
    mapped = GuestRegion.mappedInProcess();
  }

  /** The live mappings when the test began. */
  public long mappingsBefore() {
    return mappings;
  }

  /** The guest memory counted when the test began. */
  public long mappedBefore() {
    return mapped;
  }

  @Override
  public void afterEach(ExtensionContext context) {
    OpenFds.assertBackTo(fds);
    assertEquals(mappings, Mapping.liveCount(), "mappings left behind");
    assertEquals(mapped, GuestRegion.mappedInProcess(), "guest memory left counted");
  }
}
