//! Ctrl-C. The handler only sets a flag; the long loops (forward batches, SAE steps,
//! patching over heads, ACDC and EAP) call [`check`] and return [`Error::Interrupted`], so
//! a run unwinds through the ordinary error path and its output folder drops its
//! temporary files (`report::out::OutDir`). A second Ctrl-C exits at once.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use crate::error::{Error, Result};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// The exit code of a run stopped by SIGINT (128 + 2), as shells report it.
pub const EXIT_CODE: u8 = 130;

/// Install the Ctrl-C handler (once; later calls do nothing). Without it the flag is never
/// set and [`check`] costs one atomic load.
pub fn install() -> Result<()> {
    let mut res = Ok(());
    INSTALL.call_once(|| {
        res = ctrlc::set_handler(|| {
            if REQUESTED.swap(true, Ordering::SeqCst) {
                // The user asked twice: do not wait for the next check.
                eprintln!("interrupted again: exiting now (partial files keep their .tmp names)");
                std::process::exit(EXIT_CODE as i32);
            }
        })
        .map_err(|e| Error::InvalidInput(format!("cannot install the Ctrl-C handler: {e}")));
    });
    res
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// `Err(Error::Interrupted)` once Ctrl-C was pressed; call it between stages and inside
/// any loop that may run for more than a fraction of a second.
pub fn check() -> Result<()> {
    if requested() {
        Err(Error::Interrupted {
            kept: "stopped before writing results".into(),
        })
    } else {
        Ok(())
    }
}
