//! Standard output for the CLI commands. `println!` panics when the reader has gone away
//! (`keygate users list | head`); a closed pipe here means nobody wants the rest, so the
//! command stops quietly, like any Unix filter.

use std::fmt;
use std::io::{ErrorKind, Write};

/// Writes one line to standard output; exits quietly if the pipe is closed.
pub fn line(args: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")) {
        if e.kind() == ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` that survives a closed pipe.
macro_rules! out {
    () => { $crate::output::line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::line(format_args!($($arg)*)) };
}
