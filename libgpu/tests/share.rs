//! Sharing across processes: a BO exported here is imported by a child process (the test
//! binary itself, re-run with an environment variable) that receives the BO handle's fd as its
//! stdin and a syncobj token in its environment.

#![cfg(target_os = "linux")]

mod common;

use std::os::fd::AsFd;
use std::process::{Command, Stdio};

use common::{stat, Server};
use libgpu::flags::*;
use libgpu::{token_from_bytes, token_to_bytes, Bo, Device, Exported, Syncobj, Timeout};

const SOCKET_ENV: &str = "LIBGPU_CHILD_SOCKET";
const SYNCOBJ_ENV: &str = "LIBGPU_CHILD_SYNCOBJ";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
    out
}

#[test]
fn export_in_one_process_import_in_another() {
    let server = Server::start();
    let dev = server.device();
    let bo = Bo::create(&dev, 0x2000, Placement::SYSTEM, BoCreateFlags::empty()).unwrap();
    let map = bo.mmap().unwrap();
    map.write(0x1000, b"from parent").unwrap();
    let exported = bo.export().unwrap();
    assert_eq!(exported.kind(), ObjectKind::Bo);
    assert_eq!(stat(&exported.stats().unwrap(), "bo-size").unwrap(), "8192");
    let done = Syncobj::create(&dev, false).unwrap();
    let done_export = done.export().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--include-ignored", "--nocapture"])
        .env(SOCKET_ENV, &server.path)
        .env(SYNCOBJ_ENV, hex(&token_to_bytes(done_export.token())))
        .stdin(Stdio::from(exported.clone_fd().unwrap()))
        .status()
        .unwrap();
    assert!(status.success(), "child failed");
    let mut got = [0u8; 10];
    map.read(0x1000, &mut got).unwrap();
    assert_eq!(&got, b"from child", "the child's write is visible here");
    assert!(
        done.wait(Timeout::Poll).unwrap(),
        "the child signalled the shared syncobj"
    );
}

/// Runs only as the child of the test above.
#[test]
#[ignore = "child process of export_in_one_process_import_in_another"]
fn child_entry() {
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    let fd = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    let received = Exported::from_host_fd(fd).unwrap();
    let dev = Device::open_at(std::path::Path::new(&socket)).unwrap();
    let bo = dev.import_bo(received.token()).unwrap();
    assert_eq!(bo.size(), 0x2000);
    let map = bo.mmap().unwrap();
    let mut got = [0u8; 11];
    map.read(0x1000, &mut got).unwrap();
    assert_eq!(&got, b"from parent");
    map.write(0x1000, b"from child").unwrap();
    let token = token_from_bytes(unhex(&std::env::var(SYNCOBJ_ENV).unwrap()));
    dev.import_syncobj(token).unwrap().signal().unwrap();
}

#[test]
fn tokens_die_with_their_handle() {
    let server = Server::start();
    let dev = server.device();
    let bo = Bo::create(&dev, 0x1000, Placement::SYSTEM, BoCreateFlags::empty()).unwrap();
    let exported = bo.export().unwrap();
    let token = exported.token();
    let other = server.device();
    assert_eq!(other.import_bo(token).unwrap().size(), 0x1000);
    drop(exported);
    let e = other.import_bo(token).unwrap_err();
    assert_eq!(e.errno(), libgpu::errno::ENOENT);
    let so = Syncobj::create(&dev, true).unwrap();
    let e = other.import_bo(so.export().unwrap().token()).unwrap_err();
    assert_eq!(
        e.errno(),
        libgpu::errno::ENOENT,
        "a syncobj token is not a BO token"
    );
}

#[test]
fn token_bytes_round_trip() {
    let t = libgpu::Token([0x0102_0304_0506_0708, u64::MAX - 5]);
    assert_eq!(token_from_bytes(token_to_bytes(t)), t);
    assert_eq!(token_to_bytes(t)[0], 0x08, "little-endian words");
}
