//! HTTP CONNECT proxies: `HTTPS_PROXY` / `https_proxy` / `ALL_PROXY` /
//! `all_proxy` and `NO_PROXY` / `no_proxy`, as curl reads them, with basic
//! credentials in the URL.
//!
//! The credentials live only in memory and in the `Proxy-Authorization`
//! header: [`Proxy`]'s `Debug` and `Display` show `http://host:port`, and
//! every error names the proxy that way.

use std::fmt;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use base64::Engine;

use super::split_host_port;

/// An HTTP proxy that tunnels with CONNECT.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// The proxy's host.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// `user:password`, base64, if the URL had credentials.
    auth: Option<String>,
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Proxy({self}{})",
            if self.auth.is_some() {
                ", with credentials"
            } else {
                ""
            }
        )
    }
}

impl Proxy {
    /// Parses `http://[user[:password]@]host[:port][/]` (no scheme means
    /// http; the default port is 80, or 1080 for socks, which is refused).
    pub fn parse(url: &str) -> Result<Proxy, String> {
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (s.to_ascii_lowercase(), r),
            None => ("http".into(), url),
        };
        if scheme != "http" {
            // The URL is not echoed: it may hold a password.
            return Err(format!(
                "proxy scheme {scheme}:// is not supported: use an http:// proxy that allows CONNECT"
            ));
        }
        let rest = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (userinfo, authority) = match rest.rsplit_once('@') {
            Some((u, a)) => (Some(u), a),
            None => (None, rest),
        };
        let (host, port) = split_host_port(authority, 80)
            .map_err(|_| "the proxy URL has no valid host[:port]".to_string())?;
        let auth = userinfo.map(|u| {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            let plain = format!("{}:{}", percent_decode(user), percent_decode(pass));
            base64::engine::general_purpose::STANDARD.encode(plain)
        });
        Ok(Proxy { host, port, auth })
    }

    /// True if the URL carried credentials.
    pub fn has_credentials(&self) -> bool {
        self.auth.is_some()
    }

    /// The proxy to use for `target_host` according to these variables
    /// (a lookup, so tests need not touch the process's environment).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        target_host: &str,
    ) -> Result<Option<Proxy>, String> {
        let url = ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"]
            .iter()
            .find_map(|n| var(n).filter(|v| !v.trim().is_empty()));
        let Some(url) = url else {
            return Ok(None);
        };
        let no_proxy = var("NO_PROXY")
            .or_else(|| var("no_proxy"))
            .unwrap_or_default();
        if bypass(&no_proxy, target_host) {
            return Ok(None);
        }
        Proxy::parse(url.trim()).map(Some)
    }

    /// The proxy for `target_host` from the process's environment.
    pub fn from_env(target_host: &str) -> Result<Option<Proxy>, String> {
        Proxy::from_vars(|n| std::env::var(n).ok(), target_host)
    }

    /// Connects to the proxy and asks it for a tunnel to `target`
    /// (`host:port`). On success the stream is the tunnel.
    pub fn connect(&self, target: &str, timeout: Duration) -> Result<TcpStream, String> {
        let addrs: Vec<_> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve the proxy {self}: {e}"))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut stream = stream.ok_or_else(|| {
            format!(
                "cannot connect to the proxy {self}: {}",
                last.map_or("no address".into(), |e| e.to_string())
            )
        })?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|_| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("proxy {self}: {e}"))?;
        let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(auth) = &self.auth {
            req.push_str(&format!("Proxy-Authorization: Basic {auth}\r\n"));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .map_err(|e| format!("proxy {self}: {e}"))?;
        // Byte by byte up to the blank line: nothing of the tunnel may be
        // read into a buffer we then drop. Bounded.
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_RESPONSE_HEAD {
                return Err(format!(
                    "the proxy {self} sent an oversized answer to CONNECT"
                ));
            }
            match stream.read(&mut byte) {
                Ok(0) => {
                    return Err(format!(
                        "the proxy {self} closed the connection instead of answering CONNECT"
                    ))
                }
                Ok(_) => head.push(byte[0]),
                Err(e) => return Err(format!("proxy {self}: {e}")),
            }
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(&head) {
            Ok(httparse::Status::Complete(_)) => {}
            _ => {
                return Err(format!(
                    "the proxy {self} sent a malformed answer to CONNECT"
                ))
            }
        }
        let code = resp.code.unwrap_or(0);
        let reason = resp.reason.unwrap_or("").to_string();
        match code {
            200..=299 => Ok(stream),
            // 407 is the standard answer; some proxies (tinyproxy) say 401.
            401 | 407 if self.auth.is_some() => Err(format!(
                "the proxy {self} refused the credentials in the proxy URL ({code} {reason})"
            )),
            401 | 407 => Err(format!(
                "the proxy {self} requires credentials ({code} {reason}): put them in HTTPS_PROXY as http://USER:PASSWORD@HOST:PORT"
            )),
            _ => Err(format!(
                "the proxy {self} refused CONNECT {target}: {code} {reason}"
            )),
        }
    }
}

const MAX_RESPONSE_HEAD: usize = 8192;

/// True if `NO_PROXY` exempts `host`: `*`, the host itself, or a domain
/// it is under (`example.com` and `.example.com` both cover
/// `a.example.com`). Ports in entries are ignored.
pub fn bypass(no_proxy: &str, host: &str) -> bool {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    no_proxy.split(',').map(str::trim).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        let entry = match split_host_port(&entry, 0) {
            Ok((h, _)) => h,
            Err(_) => entry,
        };
        let entry = entry.trim_start_matches('.');
        !entry.is_empty()
            && (host == entry
                || (host.len() > entry.len()
                    && host.ends_with(entry)
                    && host.as_bytes()[host.len() - entry.len() - 1] == b'.'))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls_parse_and_never_show_credentials() {
        let p = Proxy::parse("http://zed%40ice:s3cr%3At@proxy.local:3128/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.local", 3128));
        assert!(p.has_credentials());
        let shown = format!("{p} {p:?}");
        assert!(!shown.contains("s3cr") && !shown.contains("zed"), "{shown}");
        let expected = base64::engine::general_purpose::STANDARD.encode("zed@ice:s3cr:t");
        assert_eq!(p.auth.as_deref(), Some(expected.as_str()));
        let p = Proxy::parse("10.0.0.1").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.has_credentials()),
            ("10.0.0.1", 80, false)
        );
        let err = Proxy::parse("socks5://u:pw@h:1080").unwrap_err();
        assert!(!err.contains("pw"));
    }

    #[test]
    fn environment_and_no_proxy() {
        let vars = |list: &'static [(&'static str, &'static str)]| {
            move |n: &str| {
                list.iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            }
        };
        let none = Proxy::from_vars(vars(&[]), "rv.example").unwrap();
        assert_eq!(none, None);
        let env = &[
            ("https_proxy", "http://p:8080"),
            ("NO_PROXY", "localhost, .corp.example"),
        ];
        assert!(Proxy::from_vars(vars(env), "rv.example").unwrap().is_some());
        assert!(Proxy::from_vars(vars(env), "rv.corp.example")
            .unwrap()
            .is_none());
        assert!(Proxy::from_vars(vars(env), "corp.example")
            .unwrap()
            .is_none());
        assert!(Proxy::from_vars(vars(env), "xcorp.example")
            .unwrap()
            .is_some());
        let all = &[("ALL_PROXY", "http://p:8080"), ("no_proxy", "*")];
        assert!(Proxy::from_vars(vars(all), "rv.example").unwrap().is_none());
        assert!(bypass("10.1.2.3:443", "10.1.2.3"));
        assert!(bypass("[::1]", "::1"));
    }
}
