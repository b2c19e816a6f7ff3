//! What the daemon benchmarks share besides the test harness (daemons on
//! loopback, `tests/common`): the baselines measured next to them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// How long the benchmarks wait for the daemons.
pub const T: Duration = Duration::from_secs(30);

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Kernel TCP over 127.0.0.1: `total` bytes written by one thread and
/// discarded by another; the time until the last byte is read.
pub fn kernel_tcp(total: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        while got < total {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        Instant::now()
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let chunk = vec![0x42u8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        s.write_all(&chunk).expect("write");
        sent += chunk.len();
    }
    reader.join().expect("reader").duration_since(start)
}

/// Kernel TCP over 127.0.0.1 in `pilotctl bench`'s pattern: `total`
/// bytes written in 64 KiB pieces to an echo server while another thread
/// reads the echo; the time until the last echoed byte is read.
pub fn kernel_tcp_echo(total: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s.shutdown(Shutdown::Write);
    });
    let s = TcpStream::connect(addr).expect("connect");
    let mut w = s.try_clone().expect("clone");
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let chunk = vec![0x42u8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = (total - sent).min(chunk.len());
            w.write_all(&chunk[..n]).expect("write");
            sent += n;
        }
        let _ = w.shutdown(Shutdown::Write);
    });
    let mut r = s;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < total {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let took = start.elapsed();
    writer.join().expect("writer");
    server.join().expect("server");
    assert_eq!(got, total, "kernel TCP echo lost bytes");
    took
}

/// A plain UDP echo over loopback: `n` round trips of 64 bytes, each
/// started `gap` after the previous one started (back to back if zero).
pub fn udp_echo(n: usize, gap: Duration) -> Vec<Duration> {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        for _ in 0..n {
            if let Ok((len, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&buf[..len], from);
            }
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    let rtts = (0..n)
        .map(|_| {
            let t = Instant::now();
            client.send_to(&[7u8; 64], addr).expect("send");
            let _ = client.recv_from(&mut buf);
            let rtt = t.elapsed();
            std::thread::sleep(gap.saturating_sub(t.elapsed()));
            rtt
        })
        .collect();
    let _ = echo.join();
    rtts
}
