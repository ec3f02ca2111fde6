//! A command's product on stdout, written so that a reader who went away ends nothing badly.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe (`exporter status | head -1`) returns EPIPE,
//! and `println!` turns that into a panic (exit 101). Like ripgrep, the exporter takes a reader that
//! went away as the end of the product: the rest is dropped quietly and the command ends with its
//! own exit code. Any other write error (a full disk behind a redirect) stays an error.

use std::io::{self, Write};

/// Stdout, on which a closed pipe swallows everything from then on.
pub(crate) struct Stdout {
    inner: io::StdoutLock<'static>,
    closed: bool,
}

impl Stdout {
    /// Locks stdout for the product of one command.
    pub(crate) fn lock() -> Stdout {
        Stdout {
            inner: io::stdout().lock(),
            closed: false,
        }
    }

    /// Whether the reader went away, so that a long product can stop early.
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    fn quiet(&mut self, result: io::Result<usize>, len: usize) -> io::Result<usize> {
        match result {
            Err(err) if err.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(len)
            }
            other => other,
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let result = self.inner.write(buf);
        self.quiet(result, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let result = self.inner.flush().map(|()| 0);
        self.quiet(result, 0).map(drop)
    }
}

/// Writes `text` whole to stdout and flushes it; a closed pipe is not an error.
pub(crate) fn print(text: &str) -> io::Result<()> {
    let mut out = Stdout::lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}
