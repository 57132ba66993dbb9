//! The message mix of the parse benchmark, shared with tests/parse_alloc.rs.

/// Short RFC 3164 from hosts, long RFC 5424 with structured data, Cisco IOS and ASA, and
/// FortiGate key=value, in roughly the proportions a site collector sees.
pub const MIX: &[&str] = &[
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
    "<86>Nov 22 10:00:00 web-01 sshd[2143]: Accepted publickey for alice from 10.0.0.7 port 52114 ssh2",
    "<30>Nov 22 10:00:01 web-01 systemd[1]: Started Session 42 of user alice.",
    "<133>Nov 22 10:00:01 haproxy[73411]: 10.0.0.9:41234 [22/Nov/2026:10:00:01.123] fe be/srv1 0/0/1/2/3 200 512 - - ---- 1/1/0/0/0 0/0 \"GET / HTTP/1.1\"",
    "<165>1 2026-11-22T10:00:01.003Z mymachine.example.com evntslog 1234 ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"] An application event log entry with enough text to be a realistic line of a few hundred bytes, as applications write them",
    "<14>1 2026-11-22T10:00:01.123456+01:00 app-7.example.net payments 9012 TXN [meta sequenceId=\"1\" sysUpTime=\"37\"][origin ip=\"10.0.0.1\" software=\"payments\" swVersion=\"2.4.1\"] payment 7f3a accepted amount=12.50 currency=EUR",
    "<189>123: *Mar  1 00:01:02.345: %SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.1)",
    "<187>Nov 22 2026 10:00:01.345 UTC: %LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
    "<166>Nov 22 2026 10:00:01: %ASA-6-302013: Built outbound TCP connection 1234 for outside:93.184.216.34/443 (93.184.216.34/443) to inside:10.0.0.7/52114 (10.0.0.7/52114)",
    "<189>date=2026-11-22 time=10:00:01 devname=\"FGT60E\" devid=\"FGT60E4Q16000000\" eventtime=1795342801123456789 tz=\"+0100\" logid=\"0000000013\" type=\"traffic\" subtype=\"forward\" level=\"notice\" vd=\"root\" srcip=10.0.0.7 srcport=52114 srcintf=\"internal\" dstip=93.184.216.34 dstport=443 dstintf=\"wan1\" proto=6 action=\"close\" policyid=1 service=\"HTTPS\" duration=12 sentbyte=1834 rcvdbyte=5420",
];
