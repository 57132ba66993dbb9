//! The `kmsg` listener: kernel records in, routed syslog out. Most tests feed records through a
//! FIFO (the listener accepts one, so the records and their sequence numbers are the test's);
//! one reads the real /dev/kmsg after writing a record to it, as root.

use std::io::Write;
use std::path::Path;

use crate::support::*;

/// A FIFO at `path`.
fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path given.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {path:?}"
    );
}

fn kmsg_config(extra: &str) -> String {
    format!(
        r#"
[listen.kernel]
kind = "kmsg"
path = "{{dir}}/kmsg"
{extra}

[output.all]
kind = "file"
path = "{{dir}}/all.json"
format = "json"

[output.kern]
kind = "file"
path = "{{dir}}/kern.log"

[[route]]
selector = "kern.*"
to = ["kern"]

[[route]]
to = ["all"]
"#
    )
}

/// A daemon reading the FIFO `kmsg` in the returned directory, where its files are too.
fn start(extra: &str) -> (TestDaemon, std::fs::File, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    mkfifo(&dir.path().join("kmsg"));
    let toml = kmsg_config(extra).replace("{dir}", dir.path().to_str().unwrap());
    let d = TestDaemon::start(&toml);
    // The daemon holds the FIFO open for reading, so this does not block.
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("kmsg"))
        .unwrap();
    (d, writer, dir)
}

/// Writes each record with one write, as the kernel hands them out.
fn write_records(w: &mut std::fs::File, records: &[&str]) {
    for r in records {
        w.write_all(r.as_bytes()).unwrap();
    }
}

#[test]
fn kernel_records_are_routed_by_facility_with_wall_time_and_dictionary() {
    let (d, mut w, dir) = start("");
    let before = chrono::Utc::now();
    write_records(
        &mut w,
        &[
            // An hour after boot, as far as this record says: dated by the host's boot time.
            "3,100,3600000000,-;usb 1-1: device descriptor read error\n SUBSYSTEM=usb\n DEVICE=+usb:1-1\n",
            "30,101,3600000100,-;systemd[1]: Started Journal Service.\n",
        ],
    );
    let all = wait_json(&dir.path().join("all.json"), 2);
    let kern = wait_lines(&dir.path().join("kern.log"), 1);
    assert_eq!(kern.len(), 1, "{kern:?}");
    assert!(
        kern[0].ends_with(" kernel: usb 1-1: device descriptor read error"),
        "{kern:?}"
    );
    let k = &all[0];
    assert_eq!(k["facility"], "kern");
    assert_eq!(k["severity"], "err");
    assert_eq!(k["app_name"], "kernel");
    assert_eq!(k["protocol"], "rfc5424");
    assert_eq!(k["listener"], "kernel");
    assert_eq!(k["parse_error"], serde_json::Value::Null);
    assert_eq!(k["message"], "usb 1-1: device descriptor read error");
    assert_eq!(
        k["hostname"],
        sluice::output::format::local_hostname(),
        "{k}"
    );
    let sd = &k["structured_data"]["kmsg"];
    assert_eq!(sd["seq"], "100", "{k}");
    assert_eq!(sd["uptime_us"], "3600000000");
    assert_eq!(sd["SUBSYSTEM"], "usb");
    assert_eq!(sd["DEVICE"], "+usb:1-1");
    // Boot time plus an hour: boot is before the test started, so the stamp is within an
    // hour of it, and the microseconds survive.
    let ts = chrono::DateTime::parse_from_rfc3339(k["timestamp"].as_str().unwrap()).unwrap();
    assert!(ts.to_utc() <= before + chrono::TimeDelta::hours(1), "{ts}");
    let u = &all[1];
    assert_eq!(
        (&u["facility"], &u["severity"], &u["app_name"], &u["procid"]),
        (
            &serde_json::json!("daemon"),
            &serde_json::json!("info"),
            &serde_json::json!("systemd"),
            &serde_json::json!("1")
        )
    );
    assert_eq!(u["message"], "Started Journal Service.");
    let m = d.listener("kernel");
    assert_eq!(count(&m.received), 2);
    assert_eq!(count(&m.parse_errors), 0);
    assert_eq!(count(&m.kernel_drops), 0);
}

#[test]
fn overwritten_records_are_counted_from_sequence_gaps() {
    let (d, mut w, _dir) = start("");
    write_records(
        &mut w,
        &[
            "6,10,1,-;first\n",
            "6,11,2,-;second\n",
            // 12, 13 and 14 were overwritten before they were read.
            "6,15,3,-;after the gap\n",
        ],
    );
    d.wait_written("kern", 3);
    assert_eq!(count(&d.listener("kernel").kernel_drops), 3);
}

#[test]
fn a_line_that_is_not_a_record_is_kept_and_flagged() {
    let (d, mut w, dir) = start("");
    write_records(
        &mut w,
        &["this is not a kmsg record\n", "x,1,2,-;bad pri\n"],
    );
    let all = wait_json(&dir.path().join("all.json"), 2);
    assert_eq!(all[0]["message"], "this is not a kmsg record");
    assert!(
        all[0]["parse_error"]
            .as_str()
            .unwrap()
            .starts_with("truncated_header"),
        "{}",
        all[0]
    );
    assert_eq!(all[0]["facility"], "user");
    assert!(
        all[1]["parse_error"]
            .as_str()
            .unwrap()
            .starts_with("invalid_pri"),
        "{}",
        all[1]
    );
    let m = d.listener("kernel");
    assert_eq!(count(&m.parse_errors), 2);
    assert_eq!(count(&m.received), 2);
}

#[test]
fn long_records_are_cut_and_flagged_and_the_rate_limit_counts() {
    let (d, mut w, dir) = start(
        "max_message_size = 480\nrate_limit = { messages = 2, interval = \"1h\", burst = 2 }",
    );
    let long = format!("6,1,1,-;{}\n", "x".repeat(1000));
    write_records(&mut w, &[&long, "6,2,2,-;two\n", "6,3,3,-;three\n"]);
    d.wait_written("kern", 2);
    let m = d.listener("kernel");
    wait_until("the third record to be rate limited", DEADLINE, || {
        count(&m.rate_limited) == 1
    });
    let kern = lines(&dir.path().join("kern.log"));
    assert_eq!(kern.len(), 2, "{kern:?}");
    assert!(kern[1].ends_with("kernel: two"), "{kern:?}");
    assert_eq!(count(&m.truncated), 1);
}

#[test]
fn reload_keeps_the_read_position_nothing_twice_nothing_lost() {
    let (d, mut w, dir) = start("");
    write_records(&mut w, &["6,1,1,-;before reload\n"]);
    d.wait_written("kern", 1);
    // A changed listener at the same path takes over the open kernel log.
    let toml =
        kmsg_config("max_message_size = 4096").replace("{dir}", dir.path().to_str().unwrap());
    d.reload(&toml).unwrap();
    write_records(&mut w, &["6,2,2,-;after reload\n"]);
    d.wait_written("kern", 2);
    let kern = lines(&dir.path().join("kern.log"));
    assert_eq!(kern.len(), 2, "{kern:?}");
    assert!(kern[0].ends_with("before reload") && kern[1].ends_with("after reload"));
    assert_eq!(count(&d.listener("kernel").kernel_drops), 0);
}

#[test]
fn the_real_dev_kmsg_is_read_as_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the /dev/kmsg test must run as root (CI does)"
    );
    let marker = format!("sluice-kmsg-test-{}", std::process::id());
    let d = TestDaemon::start(
        r#"
[listen.kernel]
kind = "kmsg"
read_existing = "never"

[output.all]
kind = "file"
path = "{dir}/all.json"
format = "json"

[[route]]
to = ["all"]
"#,
    );
    // User space may write records too (as systemd does in early boot): facility user,
    // severity notice, with a tag. The kernel rate-limits such writes, so one is written.
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .unwrap()
        .write_all(format!("<13>sluicetest[42]: {marker}\n").as_bytes())
        .unwrap();
    let path = d.dir.path().join("all.json");
    wait_until("the record written to /dev/kmsg", DEADLINE, || {
        lines(&path).iter().any(|l| l.contains(&marker))
    });
    let ev = json_lines(&path)
        .into_iter()
        .find(|e| e["message"].as_str() == Some(marker.as_str()))
        .expect("the marker as the whole message");
    assert_eq!(ev["facility"], "user");
    assert_eq!(ev["severity"], "notice");
    assert_eq!(ev["app_name"], "sluicetest");
    assert_eq!(ev["procid"], "42");
    let ts = chrono::DateTime::parse_from_rfc3339(ev["timestamp"].as_str().unwrap()).unwrap();
    let skew = (chrono::Utc::now() - ts.to_utc()).num_seconds().abs();
    // CLOCK_MONOTONIC and the kernel's record clock agree within a few seconds on any host
    // that has not been suspended.
    assert!(skew < 60, "stamp {ts} is {skew}s from now");
}

#[test]
fn check_config_names_a_bad_read_existing_and_explain_reads_a_record() {
    let (code, err, path) = check_config(
        "[listen.k]\nkind = \"kmsg\"\nread_existing = \"sometimes\"\n[output.o]\nkind = \"stdout\"\n[[route]]\nto = [\"o\"]\n",
    );
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains(&format!("{path}:3:")) && err.contains("listen.k.read_existing"),
        "{err}"
    );
    assert!(
        err.contains("\"at_boot\", \"always\" or \"never\""),
        "{err}"
    );

    let (code, text, err) = explain_with(
        "[listen.k]\nkind = \"kmsg\"\n[output.kern]\nkind = \"stdout\"\n[[route]]\nselector = \"kern.warning\"\nto = [\"kern\"]\n",
        &["--explain", "4,5,6,-;eth0: link down\n SUBSYSTEM=net"],
        b"",
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(text.contains("\"app_name\":\"kernel\""), "{text}");
    assert!(text.contains("\"SUBSYSTEM\":\"net\""), "{text}");
    assert!(text.contains("route[0]: matched -> kern"), "{text}");
}

#[test]
fn a_regular_file_is_refused_at_start() {
    let (dir, mut p) = {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notkmsg"), "").unwrap();
        let cfg = dir.path().join("s.toml");
        std::fs::write(
            &cfg,
            format!(
                "[listen.k]\nkind = \"kmsg\"\npath = \"{}/notkmsg\"\n[output.o]\nkind = \"stdout\"\n[[route]]\nto = [\"o\"]\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let p = sluice()
            .args(["--config", cfg.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        (dir, p)
    };
    let status = p.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(p.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("neither a character device like /dev/kmsg nor a FIFO"),
        "{err}"
    );
    drop(dir);
}
