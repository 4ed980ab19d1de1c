//! The guarded routines in x86_64 assembly, and the table of their fault ranges.
//!
//! Every routine is a leaf that never touches the stack, so at any instruction
//! inside a fault range the signal handler may move RIP to the routine's fix-up
//! label and the routine still returns normally to its caller.
//!
//! Calling convention (System V): arguments in RDI, RSI, RDX. Each routine
//! returns an [`Outcome`] in RAX:RDX: RAX = 0 and RDX = value on success,
//! RAX = 1 and RDX = fault address (written by the handler) on fault.
//!
//! The copy has two stages. The fast stage (`rep movsb`, or a qword loop for
//! short copies) may fault with an imprecise address (a wide access that
//! straddles a page boundary reports where the access began), so its fix-up is
//! not a return but the byte loop, which resumes from the registers that the
//! fast stage left precise (x86 string instructions and the loop both keep
//! RSI/RDI/RCX at the first byte not yet copied). A fault in the byte loop is
//! then exact, and its fix-up returns.

use core::arch::global_asm;

/// Copies shorter than this take the qword loop: `rep movsb` has a start-up
/// cost that dominates tiny copies. Measured (AMD EPYC, FSRM): `rep movsb` is
/// a flat ~4 ns up to 64 B; the loop takes ~3 ns at 8 B but its byte tail
/// makes it slower from ~24 B on. Without FSRM the start-up cost is larger.
pub const SMALL_COPY: usize = 16;

global_asm!(
    ".pushsection .text.odp_guarded,\"ax\",@progbits",
    ".balign 16",
    // odp_guarded_copy(dst, src, len) -> Outcome
    ".globl odp_guarded_copy",
    ".hidden odp_guarded_copy",
    ".type odp_guarded_copy,@function",
    "odp_guarded_copy:",
    ".cfi_startproc",
    "    mov rcx, rdx",
    "    cmp rcx, {small}",
    "    jb 3f",
    ".globl odp_guarded_copy_fast_start",
    ".hidden odp_guarded_copy_fast_start",
    "odp_guarded_copy_fast_start:",
    "    rep movsb",
    "    jmp 6f",
    // Qword loop for short copies, then fall into the byte loop for the tail.
    "3:  cmp rcx, 8",
    "    jb 4f",
    "    mov rax, qword ptr [rsi]",
    "    mov qword ptr [rdi], rax",
    "    add rsi, 8",
    "    add rdi, 8",
    "    sub rcx, 8",
    "    jmp 3b",
    ".globl odp_guarded_copy_fast_end",
    ".hidden odp_guarded_copy_fast_end",
    "odp_guarded_copy_fast_end:",
    // Byte loop: the fix-up of the fast stage, and the tail of the qword loop.
    ".globl odp_guarded_copy_bytes",
    ".hidden odp_guarded_copy_bytes",
    "odp_guarded_copy_bytes:",
    "4:  test rcx, rcx",
    "    jz 6f",
    ".globl odp_guarded_copy_exact_start",
    ".hidden odp_guarded_copy_exact_start",
    "odp_guarded_copy_exact_start:",
    "    mov al, byte ptr [rsi]",
    "    mov byte ptr [rdi], al",
    ".globl odp_guarded_copy_exact_end",
    ".hidden odp_guarded_copy_exact_end",
    "odp_guarded_copy_exact_end:",
    "    inc rsi",
    "    inc rdi",
    "    dec rcx",
    "    jmp 4b",
    "6:  xor eax, eax",
    "    xor edx, edx",
    "    ret",
    ".globl odp_guarded_copy_fixup",
    ".hidden odp_guarded_copy_fixup",
    "odp_guarded_copy_fixup:",
    "    mov eax, 1",
    "    ret",
    ".cfi_endproc",
    ".size odp_guarded_copy, . - odp_guarded_copy",
    //
    // odp_guarded_cas(addr, expect, new) -> Outcome { 0, value found }
    ".balign 16",
    ".globl odp_guarded_cas",
    ".hidden odp_guarded_cas",
    ".type odp_guarded_cas,@function",
    "odp_guarded_cas:",
    ".cfi_startproc",
    "    mov rax, rsi",
    ".globl odp_guarded_cas_start",
    ".hidden odp_guarded_cas_start",
    "odp_guarded_cas_start:",
    "    lock cmpxchg qword ptr [rdi], rdx",
    ".globl odp_guarded_cas_end",
    ".hidden odp_guarded_cas_end",
    "odp_guarded_cas_end:",
    "    mov rdx, rax",
    "    xor eax, eax",
    "    ret",
    ".globl odp_guarded_cas_fixup",
    ".hidden odp_guarded_cas_fixup",
    "odp_guarded_cas_fixup:",
    "    mov eax, 1",
    "    ret",
    ".cfi_endproc",
    ".size odp_guarded_cas, . - odp_guarded_cas",
    //
    // odp_guarded_faa(addr, add) -> Outcome { 0, value before }
    ".balign 16",
    ".globl odp_guarded_faa",
    ".hidden odp_guarded_faa",
    ".type odp_guarded_faa,@function",
    "odp_guarded_faa:",
    ".cfi_startproc",
    ".globl odp_guarded_faa_start",
    ".hidden odp_guarded_faa_start",
    "odp_guarded_faa_start:",
    "    lock xadd qword ptr [rdi], rsi",
    ".globl odp_guarded_faa_end",
    ".hidden odp_guarded_faa_end",
    "odp_guarded_faa_end:",
    "    mov rdx, rsi",
    "    xor eax, eax",
    "    ret",
    ".globl odp_guarded_faa_fixup",
    ".hidden odp_guarded_faa_fixup",
    "odp_guarded_faa_fixup:",
    "    mov eax, 1",
    "    ret",
    ".cfi_endproc",
    ".size odp_guarded_faa, . - odp_guarded_faa",
    ".popsection",
    small = const SMALL_COPY,
);

/// What a guarded routine returns in RAX:RDX.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    /// 0: success; 1: faulted.
    pub faulted: u64,
    /// The value on success, the fault address on fault.
    pub value: u64,
}

extern "sysv64" {
    pub fn odp_guarded_copy(dst: *mut u8, src: *const u8, len: usize) -> Outcome;
    pub fn odp_guarded_cas(addr: *mut u64, expect: u64, new: u64) -> Outcome;
    pub fn odp_guarded_faa(addr: *mut u64, add: u64) -> Outcome;

    // Labels, declared as functions only to take their addresses.
    fn odp_guarded_copy_fast_start();
    fn odp_guarded_copy_fast_end();
    fn odp_guarded_copy_bytes();
    fn odp_guarded_copy_exact_start();
    fn odp_guarded_copy_exact_end();
    fn odp_guarded_copy_fixup();
    fn odp_guarded_cas_start();
    fn odp_guarded_cas_end();
    fn odp_guarded_cas_fixup();
    fn odp_guarded_faa_start();
    fn odp_guarded_faa_end();
    fn odp_guarded_faa_fixup();
}

/// What the handler does for a fault at an instruction in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Resume at the address, registers untouched (the copy's byte retry).
    Retry(usize),
    /// Resume at `fixup` with RDX = fault address (the routine returns).
    /// `copy`: the faulting access was at RSI or RDI (else at RDI).
    Return { fixup: usize, copy: bool },
}

/// The address of a label.
fn addr(label: unsafe extern "sysv64" fn()) -> usize {
    label as usize
}

/// The fix-up for a fault at `rip`, if `rip` is one of ours.
///
/// Called from the signal handler: no allocation, no locks.
pub fn recovery_for(rip: usize) -> Option<Recovery> {
    let ranges: [(usize, usize, Recovery); 4] = [
        (
            addr(odp_guarded_copy_fast_start),
            addr(odp_guarded_copy_fast_end),
            Recovery::Retry(addr(odp_guarded_copy_bytes)),
        ),
        (
            addr(odp_guarded_copy_exact_start),
            addr(odp_guarded_copy_exact_end),
            Recovery::Return {
                fixup: addr(odp_guarded_copy_fixup),
                copy: true,
            },
        ),
        (
            addr(odp_guarded_cas_start),
            addr(odp_guarded_cas_end),
            Recovery::Return {
                fixup: addr(odp_guarded_cas_fixup),
                copy: false,
            },
        ),
        (
            addr(odp_guarded_faa_start),
            addr(odp_guarded_faa_end),
            Recovery::Return {
                fixup: addr(odp_guarded_faa_fixup),
                copy: false,
            },
        ),
    ];
    ranges
        .iter()
        .find(|(start, end, _)| (*start..*end).contains(&rip))
        .map(|&(_, _, recovery)| recovery)
}

/// The address to report for a fault that carries none (a general-protection
/// fault from a non-canonical address: the kernel gives `si_addr` = 0).
/// Only the exact stages report, and they access one byte at RSI or RDI
/// (copy: the non-canonical one of the two is the culprit) or eight aligned
/// bytes at RDI (atomics: never straddling into the hole, so RDI itself).
pub fn non_canonical_culprit(copy: bool, rsi: usize, rdi: usize) -> usize {
    // Non-canonical under 48-bit addressing is also non-canonical under 57.
    let canonical = |a: usize| ((a as i64) << 16 >> 16) as usize == a;
    if copy && !canonical(rsi) {
        rsi
    } else {
        rdi
    }
}
