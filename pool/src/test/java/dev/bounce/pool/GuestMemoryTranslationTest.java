package dev.bounce.pool;

import static dev.bounce.pool.testing.TestSyscalls.dup;
import static java.lang.foreign.ValueLayout.JAVA_BYTE;
import static org.junit.jupiter.api.Assertions.assertAll;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import java.lang.foreign.MemorySegment;
import java.math.BigInteger;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * Every edge of translating an (address, length) from a guest or frontend: zero lengths, last
 * bytes, one past the end, lengths that are huge as unsigned numbers, sums that wrap 2^64, gaps,
 * and both address spaces. Expected answers come from a model in exact (BigInteger) arithmetic;
 * where a translation succeeds, the bytes are checked against a separate mapping of the memfd.
 */
class GuestMemoryTranslationTest {
  private static final BigInteger TWO_64 = BigInteger.ONE.shiftLeft(64);

  /**
   * The regions, unsorted on purpose. Frontend addresses are ordered differently from guest ones; B
   * and D are adjacent in guest space; C ends exactly at 2^64 in both spaces.
   */
  private static final MemoryRegionDescription A =
      new MemoryRegionDescription(0x1000, 0x4000, 0x7f00_0000_0000L, 0x0000);

  private static final MemoryRegionDescription B =
      new MemoryRegionDescription(0x8000, 0x2000, 0x5000_0000_0000L, 0x4000);
  private static final MemoryRegionDescription C =
      new MemoryRegionDescription(0xffff_ffff_ffff_f000L, 0x1000, 0xffff_ffff_ffff_f000L, 0x6000);
  private static final MemoryRegionDescription D =
      new MemoryRegionDescription(0xa000, 0x1000, 0x6000_0000_0000L, 0x7000);
  private static final List<MemoryRegionDescription> REGIONS = List.of(C, A, D, B);
  private static final long MEMFD_SIZE = 0x8000;

  private static Memfd memfd;
  private static Mapping whole;
  private static GuestMemory memory;

  @BeforeAll
  static void share() throws Exception {
    memfd = Memfd.create("bounce-translation", MEMFD_SIZE);
    whole = memfd.map(0, MEMFD_SIZE);
    GuestMemory m = GuestMemory.empty();
    for (MemoryRegionDescription r : REGIONS) m = m.withRegion(r, dup(memfd));
    memory = m;
  }

  @AfterAll
  static void release() {
    if (memory != null) memory.close();
    if (whole != null) whole.close();
    if (memfd != null) memfd.close();
  }

  // ---- the model ----

  private static BigInteger u(long value) {
    return new BigInteger(Long.toUnsignedString(value));
  }

  /** A span of the model: [start, start + size) in one address space, at a memfd offset. */
  private record Span(BigInteger start, BigInteger size, long memfdOffset) {
    static Span guest(MemoryRegionDescription r) {
      return new Span(u(r.guestAddress()), u(r.size()), r.mmapOffset());
    }

    static Span user(MemoryRegionDescription r) {
      return new Span(u(r.userAddress()), u(r.size()), r.mmapOffset());
    }

    boolean holds(long address, long length) {
      BigInteger a = u(address);
      BigInteger end = a.add(u(length)); // never wraps: exact
      return a.compareTo(start) >= 0 && end.compareTo(start.add(size)) <= 0;
    }
  }

  /**
   * Every span holding the whole range (two when a zero-length range sits between adjacent ones).
   */
  private static List<Span> holders(List<Span> spans, long address, long length) {
    return spans.stream().filter(s -> s.holds(address, length)).toList();
  }

  /** Addresses next to every edge of every span, and some far away. */
  private static TreeSet<Long> probeAddresses(List<Span> spans) {
    TreeSet<Long> probes = new TreeSet<>(Long::compareUnsigned);
    for (long a : new long[] {0, 1, 0x7fff_ffff_ffff_ffffL, Long.MIN_VALUE, -1, -2}) probes.add(a);
    for (Span s : spans) {
      long start = s.start().longValue();
      long end = s.start().add(s.size()).longValue(); // mod 2^64
      for (long d = -2; d <= 2; d++) {
        probes.add(start + d);
        probes.add(end + d);
      }
      probes.add(start + s.size().longValue() / 2);
    }
    return probes;
  }

  private static final long[] LENGTHS = {
    0,
    1,
    2,
    0xfff,
    0x1000,
    0x1001,
    0x2000,
    0x3fff,
    0x4000,
    0x4001,
    0x1_0000_0000L,
    Long.MAX_VALUE,
    Long.MIN_VALUE,
    -0x1000,
    -2,
    -1,
  };

  /**
   * Lengths that end exactly at, one before and one after each span's end, from {@code address}.
   */
  private static List<Long> probeLengths(List<Span> spans, long address) {
    List<Long> lengths = new ArrayList<>();
    for (long l : LENGTHS) lengths.add(l);
    for (Span s : spans) {
      long toEnd = s.start().add(s.size()).subtract(u(address)).mod(TWO_64).longValue();
      lengths.add(toEnd - 1);
      lengths.add(toEnd);
      lengths.add(toEnd + 1);
    }
    return lengths;
  }

  // ---- checks against the model ----

  private interface Translator {
    MemorySegment translate(long address, long length) throws GuestAccessException;
  }

  /**
   * Translates every probe and compares with the model: success exactly when some span holds the
   * range, the slice at the right place of the right memfd bytes, and the failure naming the input.
   * Returns how many translations succeeded.
   */
  private static int checkAgainstModel(
      String what,
      Translator translator,
      List<Span> spans,
      Class<? extends GuestAccessException> failure,
      AddressKind kind) {
    int ok = 0;
    for (long address : probeAddresses(spans)) {
      for (long length : probeLengths(spans, address)) {
        String input =
            what + " " + Ranges.hex(address) + " length " + Long.toUnsignedString(length);
        List<Span> holders = holders(spans, address, length);
        MemorySegment slice;
        try {
          slice = translator.translate(address, length);
        } catch (GuestAccessException e) {
          if (!holders.isEmpty()) fail(input + " refused, but it lies inside " + holders, e);
          assertInstanceOf(failure, e, input);
          assertEquals(kind, e.kind(), input);
          assertEquals(address, e.address(), input);
          assertEquals(length, e.length(), input);
          assertTrue(e.getMessage().contains(Ranges.hex(address)), e.getMessage());
          continue;
        }
        if (holders.isEmpty()) fail(input + " translated, but no region holds it");
        assertEquals(length, slice.byteSize(), input);
        if (length > 0) {
          Span span = holders.getFirst();
          long offset = span.memfdOffset() + u(address).subtract(span.start()).longValue();
          assertSameBytes(input, slice, offset);
        }
        ok++;
      }
    }
    return ok;
  }

  /** That {@code slice} is the memfd's bytes from {@code memfdOffset}: its first and last byte. */
  private static void assertSameBytes(String input, MemorySegment slice, long memfdOffset) {
    MemorySegment file = whole.segment();
    long last = slice.byteSize() - 1;
    byte mark = (byte) (memfdOffset * 31 + last);
    slice.set(JAVA_BYTE, 0, mark);
    assertEquals(mark, file.get(JAVA_BYTE, memfdOffset), input + ": first byte elsewhere");
    slice.set(JAVA_BYTE, last, (byte) ~mark);
    assertEquals(
        (byte) ~mark, file.get(JAVA_BYTE, memfdOffset + last), input + ": last byte elsewhere");
  }

  // ---- GuestMemory ----

  @Test
  @DisplayName("guest-physical translation agrees with exact arithmetic at every edge")
  void guestPhysicalEdges() {
    List<Span> spans = REGIONS.stream().map(Span::guest).toList();
    int ok =
        checkAgainstModel(
            "guest",
            memory::translate,
            spans,
            UnmappedAddressException.class,
            AddressKind.GUEST_PHYSICAL);
    assertTrue(ok > 50, "too few successful probes to mean anything: " + ok);
  }

  @Test
  @DisplayName("frontend-virtual translation agrees with exact arithmetic at every edge")
  void frontendVirtualEdges() {
    List<Span> spans = REGIONS.stream().map(Span::user).toList();
    int ok =
        checkAgainstModel(
            "frontend",
            memory::translateUserAddress,
            spans,
            UnmappedAddressException.class,
            AddressKind.FRONTEND_VIRTUAL);
    assertTrue(ok > 50, "too few successful probes to mean anything: " + ok);
  }

  @Test
  @DisplayName("regionAt is null exactly where translate throws, and otherwise the region used")
  void regionAtAgreesWithTranslate() {
    List<Span> spans = REGIONS.stream().map(Span::guest).toList();
    for (long address : probeAddresses(spans)) {
      for (long length : probeLengths(spans, address)) {
        GuestRegion region = memory.regionAt(address, length);
        MemorySegment slice;
        try {
          slice = memory.translate(address, length);
        } catch (UnmappedAddressException e) {
          assertNull(region, () -> "regionAt found what translate refused: " + e.getMessage());
          continue;
        }
        String input = Ranges.hex(address) + " length " + Long.toUnsignedString(length);
        assertNotNull(region, () -> "regionAt refused what translate served: " + input);
        long offset = address - region.mapped().guestAddress();
        assertEquals(region.segment().address() + offset, slice.address(), input);
      }
    }
  }

  @Test
  @DisplayName("named edges: zero length, last byte, one past the end, wrapping 2^64, gaps")
  void namedEdges() throws Exception {
    long aEnd = A.guestAddress() + A.size();
    // zero length: inside, and exactly one past the end of a region; past that refused
    assertEquals(0, memory.translate(A.guestAddress() + 5, 0).byteSize());
    assertEquals(0, memory.translate(aEnd, 0).byteSize());
    assertRefused(aEnd + 1, 0);
    assertRefused(A.guestAddress() - 1, 0);
    // the last byte, and one past it
    assertEquals(1, memory.translate(aEnd - 1, 1).byteSize());
    assertRefused(aEnd, 1);
    assertRefused(aEnd - 1, 2);
    assertEquals(A.size(), memory.translate(A.guestAddress(), A.size()).byteSize());
    assertRefused(A.guestAddress(), A.size() + 1);
    // below the first region, in the gap between A and B, above B+D
    assertRefused(0, 1);
    assertRefused(0xfff, 1);
    assertRefused(0x6000, 1);
    assertRefused(0x7fff, 2);
    assertRefused(0xb000, 1);
    assertRefused(0x8000_0000_0000_0000L, 1);
    // B and D are adjacent: each side serves, a range across them does not (two regions)
    assertEquals(0x2000, memory.translate(0x8000, 0x2000).byteSize());
    assertEquals(0x1000, memory.translate(0xa000, 0x1000).byteSize());
    assertRefused(0x9fff, 2);
    assertSame(memory.regionAt(0xa000, 1), memory.regionAt(0xa000, 0));
    // C ends exactly at 2^64: the last byte of the address space is reachable ...
    assertEquals(0x1000, memory.translate(0xffff_ffff_ffff_f000L, 0x1000).byteSize());
    assertEquals(1, memory.translate(-1, 1).byteSize());
    assertEquals(0, memory.translate(-1, 1 - 1).byteSize());
    // ... and nothing that wraps past it, even when the wrapped end lands in a region
    assertRefused(-1, 2);
    assertRefused(0xffff_ffff_ffff_f000L, 0x1001);
    assertRefused(0xffff_ffff_ffff_f800L, 0x2000); // wrapped end 0x1000 = A's start
    assertRefused(0xffff_ffff_ffff_f800L, 0x1800); // wrapped end 0x800, below A
    assertRefused(0xffff_ffff_ffff_f000L, -1);
    // lengths that are huge as unsigned numbers
    assertRefused(A.guestAddress(), -1);
    assertRefused(A.guestAddress(), Long.MIN_VALUE);
    assertRefused(A.guestAddress() + 1, -1); // address + length wraps to exactly A's start
    assertRefused(A.guestAddress() + 0x10, -0x8); // wraps to inside A
  }

  private static void assertRefused(long address, long length) {
    UnmappedAddressException e =
        assertThrows(
            UnmappedAddressException.class,
            () -> memory.translate(address, length),
            () -> Ranges.hex(address) + " length " + Long.toUnsignedString(length));
    assertAll(
        () -> assertEquals(address, e.address()),
        () -> assertEquals(length, e.length()),
        () -> assertEquals(AddressKind.GUEST_PHYSICAL, e.kind()),
        () -> assertTrue(e.getMessage().contains(Ranges.hex(address)), e.getMessage()),
        () -> assertTrue(e.getMessage().contains(Long.toUnsignedString(length)), e.getMessage()));
    assertNull(memory.regionAt(address, length));
  }

  @Test
  @DisplayName("a refused translation carries no stack trace (guest input, not a bug)")
  void failuresAreCheap() {
    UnmappedAddressException e =
        assertThrows(UnmappedAddressException.class, () -> memory.translate(0, 1));
    assertEquals(0, e.getStackTrace().length);
  }

  // ---- RestrictedPool over the same regions ----

  /** The pool's model: the window clipped out of each region, in guest and frontend space. */
  private static List<Span> clipped(long start, long size, boolean user) {
    List<Span> spans = new ArrayList<>();
    BigInteger windowStart = u(start);
    BigInteger windowEnd = windowStart.add(u(size));
    for (MemoryRegionDescription r : REGIONS) {
      BigInteger from = u(r.guestAddress()).max(windowStart);
      BigInteger to = u(r.guestAddress()).add(u(r.size())).min(windowEnd);
      if (from.compareTo(to) >= 0) continue;
      BigInteger skip = from.subtract(u(r.guestAddress()));
      BigInteger base = user ? u(r.userAddress()).add(skip) : from;
      spans.add(new Span(base, to.subtract(from), r.mmapOffset() + skip.longValue()));
    }
    return spans;
  }

  private static void checkPool(long start, long size) throws Exception {
    RestrictedPool pool = RestrictedPool.at(start, size);
    for (MemoryRegionDescription r : REGIONS) pool = pool.withRegion(r, dup(memfd));
    try (RestrictedPool p = pool) {
      assertEquals(REGIONS.size(), p.regionCount());
      String window = "pool " + Ranges.describe(start, size);
      List<Span> guest = clipped(start, size, false);
      // Outside the window: PoolViolationException; inside but not shared: Unmapped.
      for (long address : probeAddresses(guest)) {
        for (long length : probeLengths(guest, address)) {
          String input =
              window + " " + Ranges.hex(address) + " length " + Long.toUnsignedString(length);
          boolean inWindow = new Span(u(start), u(size), 0).holds(address, length);
          List<Span> holders = holders(guest, address, length);
          try {
            MemorySegment slice = p.translate(address, length);
            if (holders.isEmpty())
              fail(input + " translated, but is not in the pool's part of a region");
            assertEquals(length, slice.byteSize(), input);
            if (length > 0) {
              Span s = holders.getFirst();
              assertSameBytes(
                  input, slice, s.memfdOffset() + u(address).subtract(s.start()).longValue());
            }
            assertNotNull(p.regionAt(address, length), input);
          } catch (PoolViolationException e) {
            assertTrue(!inWindow, () -> input + " is in the window, yet: " + e.getMessage());
            assertEquals(start, e.poolStart());
            assertEquals(size, e.poolSize());
            assertEquals(address, e.address());
            assertEquals(length, e.length());
            assertNull(p.regionAt(address, length), input);
          } catch (UnmappedAddressException e) {
            assertTrue(inWindow, () -> input + " is outside the window, yet: " + e.getMessage());
            assertTrue(holders.isEmpty(), () -> input + " refused, but held by " + holders);
            assertNull(p.regionAt(address, length), input);
          }
        }
      }
      int ok =
          checkAgainstModel(
              window + " frontend",
              p::translateUserAddress,
              clipped(start, size, true),
              PoolViolationException.class,
              AddressKind.FRONTEND_VIRTUAL);
      assertTrue(ok > 10, "too few successful probes: " + ok);
    }
  }

  @Test
  @DisplayName("pool inside one region: every edge, both address spaces")
  void poolInsideOneRegion() throws Exception {
    checkPool(0x2000, 0x2000);
  }

  @Test
  @DisplayName("pool over a gap and two adjacent regions: every edge, both address spaces")
  void poolOverGapAndAdjacentRegions() throws Exception {
    checkPool(0x4000, 0x7000);
  }

  @Test
  @DisplayName("pool at the very top of the address space, ending at 2^64: every edge")
  void poolAtTheTop() throws Exception {
    checkPool(0xffff_ffff_ffff_f000L, 0x1000);
    checkPool(0xffff_ffff_ffff_e000L, 0x2000);
  }
}
