//! Writing to stdout and stderr without panicking (a closed pipe is an
//! error like any other, not a panic as in `println!`).

use crate::error::{CliError, CliResult};
use std::io::Write;
use std::path::Path;

/// Writes one line to stdout.
macro_rules! outln {
    () => {
        $crate::output::out(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// Writes one line to stderr, ignoring failures (status messages only).
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::output::err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub fn out(args: std::fmt::Arguments<'_>) -> CliResult<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_fmt(args)
        .and_then(|_| stdout.flush())
        .map_err(|e| CliError::io("write", Path::new("stdout"), e))
}

pub fn err(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}
