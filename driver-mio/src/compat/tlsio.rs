//! A rustls connection over a socket as one `Read + Write` stream, for
//! tungstenite, that works the same on blocking and non-blocking sockets:
//! `WouldBlock` from the socket comes out as `WouldBlock`, and nothing is
//! lost (rustls keeps what it could not write yet, bounded by its buffer
//! limit).

use std::io::{self, Read, Write};

pub struct TlsIo<S> {
    pub conn: rustls::Connection,
    pub sock: S,
}

impl<S: Read + Write> TlsIo<S> {
    /// Writes what rustls has for the socket.
    pub fn write_out(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Drives a TLS handshake to its end (blocking sockets).
    pub fn handshake(&mut self) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.write_out()?;
            if !self.conn.is_handshaking() {
                break;
            }
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection during the TLS handshake",
                ));
            }
            if let Err(e) = self.conn.process_new_packets() {
                let _ = self.write_out();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
        self.write_out()
    }
}

fn ignore_would_block(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        r => r,
    }
}

impl<S: Read + Write> Read for TlsIo<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Handshake messages and alerts go out before we wait.
            ignore_would_block(self.write_out())?;
            if self.conn.read_tls(&mut self.sock)? == 0 {
                return Ok(0);
            }
            if let Err(e) = self.conn.process_new_packets() {
                // Tell the peer why (an alert), then give up.
                let _ = self.write_out();
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        }
    }
}

impl<S: Read + Write> Write for TlsIo<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let n = self.conn.writer().write(buf)?;
            match self.write_out() {
                Ok(()) => {}
                // The socket is full: it will say when it has room again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if n == 0 && !buf.is_empty() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // rustls's buffer was full and the socket took all of it: there
            // is room now. Answering WouldBlock here would wait for a
            // writable edge that never comes (the socket never filled).
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.sock.flush()
    }
}
