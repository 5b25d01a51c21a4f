package dev.bounce.device.cli;

import static org.junit.jupiter.api.Assertions.assertDoesNotThrow;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.bounce.device.vsock.Siblings;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The guests of {@code bounce vsock}: one {@code --vm key=value,...}, one entry of a {@code
 * --config} file (vhost-device-vsock's schema), and the rule that no two guests share a CID, a
 * vhost-user socket or a uds-path. Each rule, and the message a user gets for breaking it.
 */
class VsockVmTest {
  /** The group of a guest given none. */
  private static final Set<String> DEFAULT = Set.of(Siblings.DEFAULT_GROUP);

  @TempDir Path dir;

  private static final String BASE = "socket=/run/vhost3.sock,uds-path=/run/vm3.vsock";

  /**
   * The message of the UsageException {@code spec} gets, which must mention each of {@code says}.
   */
  private static String refused(String spec, String... says) {
    UsageException e = assertThrows(UsageException.class, () -> VsockVm.parse(spec), spec);
    String message = e.getMessage();
    assertTrue(message.startsWith("--vm " + spec + ": "), message);
    for (String s : says) assertTrue(message.contains(s), "'" + s + "' not in: " + message);
    return message;
  }

  private static VsockVm vm(long cid, VhostSocket socket, String uds) {
    return new VsockVm(cid, socket, Path.of(uds), 64 << 10, 1024, DEFAULT);
  }

  private static VhostSocket at(String path) {
    return new VhostSocket.AtPath(Path.of(path));
  }

  // --vm: what a guest is given, and its defaults

  @Test
  void defaultsAreCid3A256KBufferAndQueuesOf1024() throws Exception {
    VsockVm vm = VsockVm.parse(BASE);
    assertEquals(3, vm.guestCid());
    assertEquals(at("/run/vhost3.sock"), vm.socket());
    assertEquals(Path.of("/run/vm3.vsock"), vm.udsPath());
    assertEquals(256 << 10, vm.txBufferSize());
    assertEquals(1024, vm.queueSize());
  }

  @Test
  void everyKeyIsReadAndSpacesAroundThemAreIgnored() throws Exception {
    VsockVm vm =
        VsockVm.parse(
            " guest-cid = 7 , socket=/s.sock, uds-path=/u.vsock ,tx-buffer-size=8192,queue-size=256");
    assertEquals(new VsockVm(7, at("/s.sock"), Path.of("/u.vsock"), 8192, 256, DEFAULT), vm);
  }

  @Test
  void keysAreSpelledWithDashesOrUnderscoresAlike() throws Exception {
    VsockVm dashes =
        VsockVm.parse("guest-cid=9,socket-path=/s,uds-path=/u,tx-buffer-size=32K,queue-size=512");
    VsockVm underscores =
        VsockVm.parse("guest_cid=9,socket_path=/s,uds_path=/u,tx_buffer_size=32K,queue_size=512");
    VsockVm mixed =
        VsockVm.parse("guest_cid=9,socket-path=/s,uds_path=/u,tx-buffer_size=32K,queue_size=512");
    assertEquals(new VsockVm(9, at("/s"), Path.of("/u"), 32 << 10, 512, DEFAULT), dashes);
    assertEquals(dashes, underscores);
    assertEquals(dashes, mixed);
  }

  @Test
  void sizesTakeKAndMSuffixesAndNumbersTakeHex() throws Exception {
    assertEquals(64 << 10, VsockVm.parse(BASE + ",tx-buffer-size=64K").txBufferSize());
    assertEquals(64 << 10, VsockVm.parse(BASE + ",tx-buffer-size=64k").txBufferSize());
    assertEquals(2 << 20, VsockVm.parse(BASE + ",tx-buffer-size=2M").txBufferSize());
    assertEquals(4096, VsockVm.parse(BASE + ",tx-buffer-size=4096").txBufferSize());
    assertEquals(0x10, VsockVm.parse(BASE + ",guest-cid=0x10").guestCid());
    assertEquals(256, VsockVm.parse(BASE + ",queue-size=0x100").queueSize());
  }

  @Test
  void socketPathIsTheSameAsSocket() throws Exception {
    assertEquals(
        VsockVm.parse("socket=/run/a.sock,uds-path=/u"),
        VsockVm.parse("socket-path=/run/a.sock,uds-path=/u"));
    assertEquals(at("/run/a.sock"), VsockVm.parse("socket_path=/run/a.sock,uds-path=/u").socket());
  }

  @Test
  void fdNamesAnInheritedSocket() throws Exception {
    VsockVm vm = VsockVm.parse("guest-cid=5,fd=3,uds-path=/u");
    assertEquals(new VhostSocket.Inherited(3), vm.socket());
    assertEquals("fd 3", vm.socket().toString());
    assertEquals(5, vm.guestCid());
  }

  // --vm: what is refused, and what the user is told

  @Test
  void aMissingUdsPathIsRefused() {
    refused("guest-cid=4,socket=/s", "uds-path is missing");
  }

  @Test
  void neitherSocketNorFdIsRefused() {
    refused("guest-cid=4,uds-path=/u", "give exactly one of socket (or socket-path)", "and fd");
  }

  @Test
  void bothSocketAndFdAreRefused() {
    refused("socket=/s,fd=3,uds-path=/u", "give exactly one of socket");
    refused("socket-path=/s,fd=3,uds-path=/u", "give exactly one of socket");
    refused("socket=/s,socket-path=/s,uds-path=/u", "give exactly one of socket");
  }

  @Test
  void anUnknownKeyIsRefusedListingTheKnownOnes() {
    String message = refused(BASE + ",colour=blue", "unknown key 'colour'", "(known: ");
    for (String key : VsockVm.KEYS) {
      assertTrue(message.contains(key), key + " not listed: " + message);
    }
    // As the user spelled it.
    refused(BASE + ",colour_name=blue", "unknown key 'colour_name'");
  }

  @Test
  void vhostDeviceVsocksForwardingIsRefusedAsUnsupported() {
    for (String key : List.of("forward_cid=1", "forward-cid=1", "forward-listen=9001+9002")) {
      refused(
          BASE + "," + key,
          "forward-cid and forward-listen (vhost-device-vsock's forwarding over the host's vsock)"
              + " are not supported by bounce");
    }
  }

  @Test
  void groupsAreNamesJoinedWithPlusAndDefaultToDefault() throws Exception {
    assertEquals(Set.of("default"), VsockVm.parse(BASE).groups());
    assertEquals(
        List.of("group1", "groupA"),
        List.copyOf(VsockVm.parse(BASE + ",groups=group1+groupA").groups()));
    assertEquals(Set.of("x"), VsockVm.parse(BASE + ",groups=x+x").groups());
    refused(BASE + ",groups=a++b", "groups 'a++b' has an empty group name");
    refused(BASE + ",groups=a+", "groups 'a+' has an empty group name");
    refused(BASE + ",groups=", "groups has no value");
  }

  @Test
  void aPairWithoutAnEqualsSignIsRefused() {
    UsageException e = assertThrows(UsageException.class, () -> VsockVm.parse(BASE + ",verbose"));
    assertEquals("--vm: 'verbose' is not key=value", e.getMessage());
    e = assertThrows(UsageException.class, () -> VsockVm.parse("=3," + BASE));
    assertEquals("--vm: '=3' is not key=value", e.getMessage());
  }

  @Test
  void badNumbersAreRefusedNamingTheKeyAndValue() {
    refused(BASE + ",guest-cid=three", "guest-cid 'three' is not a number");
    refused(BASE + ",guest-cid=", "guest-cid has no value");
    refused(BASE + ",queue-size=1k", "queue-size '1k' is not a number");
    refused(BASE + ",tx-buffer-size=lots", "tx-buffer-size: 'lots' is not a size");
    refused(BASE + ",tx-buffer-size=64Q", "tx-buffer-size: '64Q' is not a size");
    refused(BASE + ",guest-cid=99999999999999999999", "is not a number");
    refused("fd=three,uds-path=/u", "fd 'three' is not a number");
    refused("fd=-1,uds-path=/u", "fd -1 is not an fd number");
    refused("fd=4294967296,uds-path=/u", "fd 4294967296 is not an fd number");
  }

  @Test
  void aCidOutsideTheGuestRangeIsRefused() throws Exception {
    for (String cid : List.of("0", "1", "2", "-3", "4294967295", "0xffffffffffffffff")) {
      refused(BASE + ",guest-cid=" + cid, "is not a guest CID (3 to 4294967294)");
    }
    assertEquals(0xffff_fffeL, VsockVm.parse(BASE + ",guest-cid=4294967294").guestCid());
  }

  @Test
  void aTxBufferSizeOutside4096To64MIsRefused() throws Exception {
    refused(BASE + ",tx-buffer-size=4095", "tx-buffer-size 4095 is not between 4096 and 64M");
    refused(BASE + ",tx-buffer-size=0", "tx-buffer-size 0 is not between 4096 and 64M");
    refused(
        BASE + ",tx-buffer-size=67108865", "tx-buffer-size 67108865 is not between 4096 and 64M");
    refused(BASE + ",tx-buffer-size=65M", "is not between 4096 and 64M");
    // Past an int: refused as out of range, not wrapped around into the window.
    refused(BASE + ",tx-buffer-size=4G", "tx-buffer-size 4294967296 is out of range");
    refused(BASE + ",tx-buffer-size=-1", "tx-buffer-size -1 is out of range");
    assertEquals(64 << 20, VsockVm.parse(BASE + ",tx-buffer-size=64M").txBufferSize());
  }

  @Test
  void aQueueSizeThatIsNotAPowerOfTwoUpTo32768IsRefused() throws Exception {
    for (String size : List.of("1000", "0", "3", "6", "65536")) {
      refused(BASE + ",queue-size=" + size, "is not a power of two up to 32768");
    }
    refused(BASE + ",queue-size=1000", "queue-size 1000 is not a power of two up to 32768");
    refused(BASE + ",queue-size=-2", "queue-size -2 is out of range");
    assertEquals(32768, VsockVm.parse(BASE + ",queue-size=32768").queueSize());
    assertEquals(1, VsockVm.parse(BASE + ",queue-size=1").queueSize());
  }

  @Test
  void ofTakesTheValuesAConfigFileGives() throws Exception {
    Map<String, Object> keys = new LinkedHashMap<>();
    keys.put("guest_cid", 12);
    keys.put("socket", "/s");
    keys.put("uds_path", "/u");
    keys.put("tx_buffer_size", 65536);
    keys.put("queue_size", 128L);
    assertEquals(
        new VsockVm(12, at("/s"), Path.of("/u"), 65536, 128, DEFAULT), VsockVm.of(keys, "here"));
    keys.put("queue_size", 100);
    UsageException e = assertThrows(UsageException.class, () -> VsockVm.of(keys, "here"));
    assertEquals("here: queue-size 100 is not a power of two up to 32768", e.getMessage());
  }

  // the flags: the one guest of --socket ... --uds-path ..., named in the flags' spelling

  private static String flagsRefused(Map<String, String> flags) {
    return assertThrows(UsageException.class, () -> VsockVm.ofFlags(flags)).getMessage();
  }

  @Test
  void theFlagsFormNamesItsMistakesAsFlags() throws Exception {
    assertEquals("--uds-path is required", flagsRefused(Map.of("socket", "/s")));
    assertEquals(
        "give exactly one of --socket (or --socket-path), a path, and --fd, an inherited fd",
        flagsRefused(Map.of("uds-path", "/u")));
    Map<String, String> base = Map.of("socket", "/s", "uds-path", "/u");
    for (var bad :
        Map.of(
                "guest-cid", "--guest-cid 2 is not a guest CID (3 to 4294967294)",
                "queue-size", "--queue-size 3 is not a power of two up to 32768",
                "tx-buffer-size", "--tx-buffer-size 1 is not between 4096 and 64M")
            .entrySet()) {
      Map<String, String> flags = new LinkedHashMap<>(base);
      flags.put(
          bad.getKey(),
          bad.getKey().equals("guest-cid") ? "2" : bad.getKey().equals("queue-size") ? "3" : "1");
      assertEquals(bad.getValue(), flagsRefused(flags));
    }
    Map<String, String> word = new LinkedHashMap<>(base);
    word.put("guest-cid", "three");
    assertEquals("--guest-cid 'three' is not a number", flagsRefused(word));
    assertEquals(
        "--fd 1 is standard input, output or error; pass the socket at 3 or up",
        flagsRefused(Map.of("fd", "1", "uds-path", "/u")));
    assertEquals(
        new VsockVm(3, at("/s"), Path.of("/u"), 256 << 10, 1024, DEFAULT), VsockVm.ofFlags(base));
  }

  // --config: vhost-device-vsock's YAML

  private Path yaml(String text) throws IOException {
    return Files.writeString(dir.resolve("vms.yaml"), text);
  }

  private UsageException configRefused(String text, String says) throws IOException {
    Path file = yaml(text);
    UsageException e = assertThrows(UsageException.class, () -> VsockCommand.fromConfig(file));
    assertTrue(e.getMessage().startsWith(file.toString()), e.getMessage());
    assertTrue(e.getMessage().contains(says), "'" + says + "' not in: " + e.getMessage());
    return e;
  }

  @Test
  void aConfigFileWithTwoVmsGivesBothInOrder() throws Exception {
    Path file =
        yaml(
            """
            # as vhost-device-vsock's README has it
            vms:
              - guest_cid: 3
                socket: /tmp/vhost3.socket
                uds_path: /tmp/vm3.vsock
                tx_buffer_size: 65536
                queue_size: 1024
                groups: group1+groupA
              - guest_cid: 4
                socket: /tmp/vhost4.socket
                uds_path: /tmp/vm4.vsock
                tx_buffer_size: 32K
                groups: group2+groupB
            """);
    assertEquals(
        List.of(
            new VsockVm(
                3,
                at("/tmp/vhost3.socket"),
                Path.of("/tmp/vm3.vsock"),
                65536,
                1024,
                Set.of("group1", "groupA")),
            new VsockVm(
                4,
                at("/tmp/vhost4.socket"),
                Path.of("/tmp/vm4.vsock"),
                32 << 10,
                1024,
                Set.of("group2", "groupB"))),
        VsockCommand.fromConfig(file));
  }

  @Test
  void aConfigEntryTakesDefaultsDashesTheAliasAndFd() throws Exception {
    Path file =
        yaml(
            """
            vms:
              - {socket_path: /s1, uds_path: /u1}
              - {guest-cid: 5, fd: 3, uds-path: /u2, queue-size: 64}
            """);
    assertEquals(
        List.of(
            new VsockVm(3, at("/s1"), Path.of("/u1"), 256 << 10, 1024, DEFAULT),
            new VsockVm(5, new VhostSocket.Inherited(3), Path.of("/u2"), 256 << 10, 64, DEFAULT)),
        VsockCommand.fromConfig(file));
  }

  @Test
  void invalidYamlIsRefused() throws Exception {
    configRefused("vms: [{guest_cid: 3, socket: /s\n", "is not valid YAML");
    configRefused("vms:\n  - socket: /s: x\n", "is not valid YAML");
  }

  @Test
  void aConfigWithoutAVmsListIsRefused() throws Exception {
    for (String text :
        List.of(
            "",
            "vm:\n  - {socket: /s, uds_path: /u}\n",
            "vms: {guest_cid: 3, socket: /s, uds_path: /u}\n",
            "vms: 3\n",
            "- vms: []\n",
            "just text\n")) {
      configRefused(text, "expected a top-level 'vms:' list");
    }
  }

  @Test
  void aVmsEntryThatIsNotAMappingIsRefused() throws Exception {
    configRefused(
        "vms:\n  - {socket: /s, uds_path: /u}\n  - guest_cid=4,socket=/s4\n",
        "vms[1] is not a mapping");
    configRefused("vms:\n  - [3, /s, /u]\n", "vms[0] is not a mapping");
  }

  @Test
  void anEmptyVmsListIsRefused() throws Exception {
    configRefused("vms: []\n", "'vms:' is empty");
    configRefused("vms:\n", "expected a top-level 'vms:' list");
  }

  @Test
  void aBadEntryIsRefusedNamingItsIndex() throws Exception {
    UsageException e =
        configRefused(
            "vms:\n  - {socket: /s, uds_path: /u}\n  - {guest_cid: 4, socket: /s4}\n",
            "vms[1]: uds-path is missing");
    assertEquals(dir.resolve("vms.yaml") + " vms[1]: uds-path is missing", e.getMessage());
    configRefused(
        "vms:\n  - {socket: /s, uds_path: /u, groups: +default}\n",
        "vms[0]: groups '+default' has an empty group name");
    configRefused(
        "vms:\n  - {socket: /s, uds_path: /u, guest_cid: 2}\n",
        "vms[0]: guest-cid 2 is not a guest CID");
    configRefused(
        "vms:\n  - {socket: /s, uds_path: /u, tx_buffer_size: 1024}\n",
        "vms[0]: tx-buffer-size 1024 is not between 4096 and 64M");
    configRefused(
        "vms:\n  - {socket: /s, uds_path: /u, queue_size: 100}\n",
        "vms[0]: queue-size 100 is not a power of two");
    configRefused(
        "vms:\n  - {socket: /s, uds_path: /u, forward_cid: 1}\n",
        "vms[0]: forward-cid and forward-listen (vhost-device-vsock's forwarding");
  }

  @Test
  void aConfigKeyWithoutAValueIsRefusedNotTakenAsTheWordNull() throws Exception {
    // YAML reads "uds_path:" as null; it must not become a socket called "null" in the cwd.
    configRefused("vms:\n  - {socket: /s, uds_path: }\n", "vms[0]: uds_path has no value");
    configRefused("vms:\n  - socket: ~\n    uds_path: /u\n", "vms[0]: socket has no value");
    configRefused(
        "vms:\n  - {socket: /s, uds_path: /u, guest_cid: null}\n",
        "vms[0]: guest_cid has no value");
    configRefused(
        "vms:\n  - {socket: [/s1, /s2], uds_path: /u}\n", "vms[0]: socket is not a single value");
  }

  @Test
  void aMissingConfigFileIsAUsageErrorThatSaysSo() {
    Path file = dir.resolve("no-such.yaml");
    UsageException e = assertThrows(UsageException.class, () -> VsockCommand.fromConfig(file));
    assertEquals("--config " + file + ": no such file", e.getMessage());
  }

  @Test
  void aConfigThatIsADirectoryIsAUsageErrorThatSaysSo() {
    UsageException e = assertThrows(UsageException.class, () -> VsockCommand.fromConfig(dir));
    assertEquals("--config " + dir + " is a directory, not a YAML file", e.getMessage());
  }

  // distinct(): no two guests share a CID, a vhost-user socket or a uds-path

  private static String clash(List<VsockVm> vms) {
    return assertThrows(UsageException.class, () -> VsockCommand.distinct(vms)).getMessage();
  }

  @Test
  void twoGuestsWithOneCidAreRefused() {
    assertEquals(
        "guests 1 and 2 both have guest CID 3; each needs its own",
        clash(List.of(vm(3, at("/s1"), "/u1"), vm(3, at("/s2"), "/u2"))));
  }

  @Test
  void twoGuestsOnOneSocketPathAreRefused() {
    assertEquals(
        "guests 1 and 2 both have vhost-user socket /s; each needs its own",
        clash(List.of(vm(3, at("/s"), "/u1"), vm(4, at("/s"), "/u2"))));
  }

  @Test
  void twoGuestsOnOneInheritedFdAreRefused() {
    assertEquals(
        "guests 1 and 2 both have vhost-user socket fd 3; each needs its own",
        clash(
            List.of(
                vm(3, new VhostSocket.Inherited(3), "/u1"),
                vm(4, new VhostSocket.Inherited(3), "/u2"))));
  }

  @Test
  void twoGuestsWithOneUdsPathAreRefused() {
    assertEquals(
        "guests 1 and 2 both have uds-path /u; each needs its own",
        clash(List.of(vm(3, at("/s1"), "/u"), vm(4, at("/s2"), "/u"))));
  }

  @Test
  void aClashIsFoundBetweenAnyTwoGuestsAndNamesThem() {
    assertEquals(
        "guests 2 and 4 both have uds-path /u2; each needs its own",
        clash(
            List.of(
                vm(3, at("/s1"), "/u1"),
                vm(4, at("/s2"), "/u2"),
                vm(5, at("/s3"), "/u3"),
                vm(6, at("/s4"), "/u2"))));
    assertEquals(
        "guests 1 and 3 both have guest CID 3; each needs its own",
        clash(List.of(vm(3, at("/s1"), "/u1"), vm(4, at("/s2"), "/u2"), vm(3, at("/s3"), "/u3"))));
  }

  @Test
  void distinctGuestsAreAccepted() throws Exception {
    List<VsockVm> vms =
        List.of(
            vm(3, at("/s1"), "/u1"),
            vm(4, at("/s2"), "/u2"),
            vm(5, new VhostSocket.Inherited(3), "/u3"),
            vm(6, new VhostSocket.Inherited(4), "/u4"));
    assertSame(vms, VsockCommand.distinct(vms));
    List<VsockVm> one = List.of(vm(3, at("/s1"), "/u1"));
    assertSame(one, VsockCommand.distinct(one));
  }

  @Test
  void distinctRunsOnWhatParseGives() throws Exception {
    List<VsockVm> vms =
        List.of(
            VsockVm.parse("guest-cid=3,socket=/s1,uds-path=/u1"),
            VsockVm.parse("guest_cid=3,socket_path=/s2,uds_path=/u2"));
    assertEquals("guests 1 and 2 both have guest CID 3; each needs its own", clash(vms));
  }

  @Test
  void aKeyGivenTwiceIsRefused() {
    refused(BASE + ",queue-size=64,queue-size=128", "queue-size is given twice");
    refused(BASE + ",guest-cid=4,guest_cid=5", "guest-cid is given twice");
  }

  @Test
  void pathsClashHoweverTheyAreSpelled() throws Exception {
    VsockVm a = VsockVm.parse("guest-cid=3,socket=/tmp/a.sock,uds-path=/tmp/a.vsock");
    VsockVm sameSocket = VsockVm.parse("guest-cid=4,socket=/tmp/./x/../a.sock,uds-path=/tmp/b");
    VsockVm socketOnUds = VsockVm.parse("guest-cid=5,socket=/tmp/a.vsock,uds-path=/tmp/c");
    assertTrue(
        clash(List.of(a, sameSocket)).contains("both have vhost-user socket"),
        clash(List.of(a, sameSocket)));
    assertTrue(
        clash(List.of(a, socketOnUds)).contains("both have the path /tmp/a.vsock"),
        clash(List.of(a, socketOnUds)));
  }

  @Test
  void aKeyTwiceInAConfigEntryIsRefused() throws Exception {
    configRefused(
        "vms:\n  - {socket: /first, socket: /second, uds_path: /u}\n", "is not valid YAML");
  }

  @Test
  void anEmptyValueIsRefused() throws Exception {
    refused("socket=/s,uds-path=", "uds-path has no value");
    configRefused("vms:\n  - {socket: /s, uds_path: \"\"}\n", "uds_path has no value");
  }

  @Test
  void aGuestWhoseSocketIsOneOfItsOwnHostSidePathsIsRefused() {
    for (String socket :
        List.of("/tmp/g/vm.vsock", "/tmp/g/vm.vsock.seqpacket", "/tmp/g/vm.vsock_5000")) {
      VsockVm vm = vm(3, at(socket), "/tmp/g/./vm.vsock");
      assertTrue(
          clash(List.of(vm)).contains("is also a path of its host side"), clash(List.of(vm)));
    }
  }

  /**
   * A guest names the host port P and bounce connects to {@code <uds-path>_P}: another guest's
   * socket or host side there would be reachable from this guest.
   */
  @Test
  void aPathAnotherGuestReachesByNamingAPortIsRefused() {
    assertTrue(
        clash(List.of(vm(3, at("/s1"), "/run/a"), vm(4, at("/run/a_5000"), "/run/b")))
            .contains("both have the path /run/a_5000 (one's socket, among the other's"),
        "a socket at another guest's <uds-path>_<port>");
    assertTrue(
        clash(List.of(vm(3, at("/s1"), "/run/a"), vm(4, at("/s2"), "/run/a_7")))
            .contains("both have host-side paths"),
        "a uds-path at another guest's <uds-path>_<port>");
    assertTrue(
        clash(List.of(vm(3, at("/s1"), "/run/a"), vm(4, at("/s2"), "/run/a.seqpacket")))
            .contains("both have host-side paths"),
        "a uds-path at another guest's SEQPACKET listener");
    // Names that only look alike are another guest's own.
    List<VsockVm> apart =
        List.of(
            vm(3, at("/run/a_x"), "/run/a"),
            vm(4, at("/run/a_"), "/run/a_b"),
            vm(5, at("/run/other/a_1"), "/run/c"));
    assertSame(apart, assertDoesNotThrow(() -> VsockCommand.distinct(apart)));
  }

  @Test
  void anFdOfStandardInputOutputOrErrorIsRefused() {
    for (int fd = 0; fd < 3; fd++) {
      refused("fd=" + fd + ",uds-path=/u", "fd " + fd + " is standard input, output or error");
    }
  }
}
