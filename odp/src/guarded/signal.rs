//! The SIGSEGV/SIGBUS handler: fix-up for faults inside the guarded routines,
//! chaining to the previously installed handler for every other fault.

use super::x86_64::{non_canonical_culprit, recovery_for, Recovery};
use libc::{c_int, c_void, siginfo_t, ucontext_t};
use std::sync::{Once, OnceLock};

/// The signals a memory access can raise: SIGSEGV (unmapped, no permission,
/// non-canonical) and SIGBUS (e.g. a file mapping past end of file).
const SIGNALS: [c_int; 2] = [libc::SIGSEGV, libc::SIGBUS];

/// `si_code` of a fault the kernel raised without an address (x86 #GP).
const SI_KERNEL: c_int = 0x80;

static INSTALL: Once = Once::new();

/// The dispositions ours replaced, indexed like [`SIGNALS`]. Written once,
/// before our handler is installed, so the handler always finds it set.
static PREVIOUS: OnceLock<[libc::sigaction; 2]> = OnceLock::new();

/// Install the handler on first use. Lazily, so that a program that never
/// moves bytes through the device keeps its signal dispositions untouched.
pub fn ensure_installed() {
    INSTALL.call_once(install);
}

fn install() {
    let mut previous = [empty_action(), empty_action()];
    for (sig, prev) in SIGNALS.iter().zip(previous.iter_mut()) {
        // SAFETY: a null new action only queries; `prev` is a valid out-pointer.
        let rc = unsafe { libc::sigaction(*sig, std::ptr::null(), prev) };
        assert_eq!(rc, 0, "sigaction query failed");
    }
    assert!(
        PREVIOUS.set(previous).is_ok(),
        "guarded handler installed twice"
    );

    let mut ours = empty_action();
    ours.sa_sigaction = handler as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
    // SA_ONSTACK: std's stack-overflow detection (which we chain to) needs the
    // alternate stack, since the faulting stack is the exhausted one.
    ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
    for sig in SIGNALS {
        // SAFETY: `ours` is fully initialised and its handler is an
        // `extern "C"` function with the SA_SIGINFO signature.
        let rc = unsafe { libc::sigaction(sig, &ours, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaction install failed");
    }
}

fn empty_action() -> libc::sigaction {
    // SAFETY: `sigaction` is plain old data; all-zero is SIG_DFL, no flags,
    // and an empty mask (sigemptyset on Linux clears the bits).
    unsafe { std::mem::zeroed() }
}

/// Async-signal-safe: reads only, no allocation, no locks.
extern "C" fn handler(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
    // SAFETY: installed with SA_SIGINFO, so the kernel passes a valid siginfo.
    let code = unsafe { (*info).si_code };
    // A positive si_code means the kernel raised it for this instruction; a
    // kill()/tgkill() of SIGSEGV that happens to land inside a routine is not
    // a fault and must not be "fixed up".
    if code > 0 {
        // SAFETY: with SA_SIGINFO `ctx` is the interrupted thread's
        // ucontext_t, which the handler may modify to change how it resumes.
        let gregs = unsafe { &mut (*ctx.cast::<ucontext_t>()).uc_mcontext.gregs };
        let rip = gregs[libc::REG_RIP as usize] as usize;
        match recovery_for(rip) {
            Some(Recovery::Retry(to)) => {
                gregs[libc::REG_RIP as usize] = to as i64;
                return;
            }
            Some(Recovery::Return { fixup, copy }) => {
                let addr = if code == SI_KERNEL {
                    let rsi = gregs[libc::REG_RSI as usize] as usize;
                    let rdi = gregs[libc::REG_RDI as usize] as usize;
                    non_canonical_culprit(copy, rsi, rdi)
                } else {
                    // SAFETY: for kernel-raised SIGSEGV/SIGBUS the siginfo
                    // carries the fault address union member.
                    unsafe { (*info).si_addr() as usize }
                };
                gregs[libc::REG_RDX as usize] = addr as i64;
                gregs[libc::REG_RIP as usize] = fixup as i64;
                return;
            }
            None => {}
        }
    }
    chain(sig, info, ctx, code);
}

/// Hand a fault that is not ours to whoever was installed before us (std's
/// stack-overflow detector in a Rust binary), or reproduce the default.
fn chain(sig: c_int, info: *mut siginfo_t, ctx: *mut c_void, code: c_int) {
    let index = usize::from(sig != libc::SIGSEGV);
    let prev = match PREVIOUS.get() {
        Some(previous) => previous[index],
        None => empty_action(),
    };
    match prev.sa_sigaction {
        libc::SIG_IGN if code <= 0 => {}
        libc::SIG_DFL | libc::SIG_IGN => {
            // SAFETY: `prev` is the disposition the kernel handed us.
            unsafe { libc::sigaction(sig, &prev, std::ptr::null_mut()) };
            if code <= 0 {
                // Sent by a process: returning would not resend it. It is
                // blocked while we run, so it is delivered when we return.
                // SAFETY: raise is async-signal-safe.
                unsafe { libc::raise(sig) };
            }
            // A kernel fault re-executes on return and now kills the process
            // (the kernel forces SIG_DFL for a synchronous fault if ignored).
        }
        f if prev.sa_flags & libc::SA_SIGINFO != 0 => {
            // SAFETY: SA_SIGINFO says `f` has the three-argument signature;
            // we pass on exactly what the kernel gave us.
            let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                unsafe { std::mem::transmute(f) };
            f(sig, info, ctx);
        }
        f => {
            // SAFETY: without SA_SIGINFO `f` is a one-argument sa_handler.
            let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(f) };
            f(sig);
        }
    }
}
