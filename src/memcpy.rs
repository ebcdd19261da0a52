//! The static x86_64 build's `memcpy`. musl's copies with `rep movsq` whatever the size,
//! which costs tens of cycles to start; Rust calls `memcpy` for every move of a value over
//! 128 bytes (requests, responses, futures), most of them 129 to 256 bytes, a few dozen
//! times per scrape. The profile of the static exporter under scrapes showed musl's
//! `memcpy` at 6.5 % of the exporter's time, against 2.4 % for glibc's in the glibc build
//! (docs/performance.md, "The scrape path and the static binary").
//!
//! This one copies up to 256 bytes with straight-line 16-byte loads and stores, all loads
//! before any store, and leaves longer copies to `rep movsb`, which current processors run
//! at full speed. It also defines musl's internal `__memcpy_fwd`, which musl's `memmove`
//! jumps to for a copy that may go forwards, so that musl's own `memcpy` is never linked:
//! loading everything before storing, and `rep movsb`, which copies forwards, are both
//! right for such an overlap.
//!
//! Written in assembly, so that no optimisation can turn it into a call to itself. Other
//! x86_64 Linux builds assemble it under its own name only, for the tests; the directives
//! are ELF's, so other systems have none of it.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
macro_rules! copy_forward {
    ($($label:literal),*) => {
        std::arch::global_asm!(
            $(concat!(".globl ", $label), concat!(".type ", $label, ",@function"),)*
            ".p2align 4",
            $(concat!($label, ":"),)*
            "mov rax, rdi",
            "cmp rdx, 16",
            "jbe 16f",
            "cmp rdx, 32",
            "jbe 32f",
            "cmp rdx, 64",
            "jbe 64f",
            "cmp rdx, 128",
            "jbe 128f",
            "cmp rdx, 256",
            "jbe 256f",
            "mov rcx, rdx",
            "rep movsb",
            "ret",
            // 129 to 256 bytes: the first 128 and the last 128, overlapping.
            "256:",
            "movdqu xmm0, [rsi]",
            "movdqu xmm1, [rsi + 16]",
            "movdqu xmm2, [rsi + 32]",
            "movdqu xmm3, [rsi + 48]",
            "movdqu xmm4, [rsi + 64]",
            "movdqu xmm5, [rsi + 80]",
            "movdqu xmm6, [rsi + 96]",
            "movdqu xmm7, [rsi + 112]",
            "movdqu xmm8, [rsi + rdx - 128]",
            "movdqu xmm9, [rsi + rdx - 112]",
            "movdqu xmm10, [rsi + rdx - 96]",
            "movdqu xmm11, [rsi + rdx - 80]",
            "movdqu xmm12, [rsi + rdx - 64]",
            "movdqu xmm13, [rsi + rdx - 48]",
            "movdqu xmm14, [rsi + rdx - 32]",
            "movdqu xmm15, [rsi + rdx - 16]",
            "movdqu [rdi], xmm0",
            "movdqu [rdi + 16], xmm1",
            "movdqu [rdi + 32], xmm2",
            "movdqu [rdi + 48], xmm3",
            "movdqu [rdi + 64], xmm4",
            "movdqu [rdi + 80], xmm5",
            "movdqu [rdi + 96], xmm6",
            "movdqu [rdi + 112], xmm7",
            "movdqu [rdi + rdx - 128], xmm8",
            "movdqu [rdi + rdx - 112], xmm9",
            "movdqu [rdi + rdx - 96], xmm10",
            "movdqu [rdi + rdx - 80], xmm11",
            "movdqu [rdi + rdx - 64], xmm12",
            "movdqu [rdi + rdx - 48], xmm13",
            "movdqu [rdi + rdx - 32], xmm14",
            "movdqu [rdi + rdx - 16], xmm15",
            "ret",
            // 65 to 128 bytes: the first 64 and the last 64.
            "128:",
            "movdqu xmm0, [rsi]",
            "movdqu xmm1, [rsi + 16]",
            "movdqu xmm2, [rsi + 32]",
            "movdqu xmm3, [rsi + 48]",
            "movdqu xmm4, [rsi + rdx - 64]",
            "movdqu xmm5, [rsi + rdx - 48]",
            "movdqu xmm6, [rsi + rdx - 32]",
            "movdqu xmm7, [rsi + rdx - 16]",
            "movdqu [rdi], xmm0",
            "movdqu [rdi + 16], xmm1",
            "movdqu [rdi + 32], xmm2",
            "movdqu [rdi + 48], xmm3",
            "movdqu [rdi + rdx - 64], xmm4",
            "movdqu [rdi + rdx - 48], xmm5",
            "movdqu [rdi + rdx - 32], xmm6",
            "movdqu [rdi + rdx - 16], xmm7",
            "ret",
            // 33 to 64 bytes: the first 32 and the last 32.
            "64:",
            "movdqu xmm0, [rsi]",
            "movdqu xmm1, [rsi + 16]",
            "movdqu xmm2, [rsi + rdx - 32]",
            "movdqu xmm3, [rsi + rdx - 16]",
            "movdqu [rdi], xmm0",
            "movdqu [rdi + 16], xmm1",
            "movdqu [rdi + rdx - 32], xmm2",
            "movdqu [rdi + rdx - 16], xmm3",
            "ret",
            // 17 to 32 bytes: the first 16 and the last 16.
            "32:",
            "movdqu xmm0, [rsi]",
            "movdqu xmm1, [rsi + rdx - 16]",
            "movdqu [rdi], xmm0",
            "movdqu [rdi + rdx - 16], xmm1",
            "ret",
            // 8 to 16 bytes: the first 8 and the last 8.
            "16:",
            "cmp rdx, 8",
            "jb 7f",
            "mov rcx, [rsi]",
            "mov r8, [rsi + rdx - 8]",
            "mov [rdi], rcx",
            "mov [rdi + rdx - 8], r8",
            "ret",
            // 4 to 7 bytes: the first 4 and the last 4.
            "7:",
            "cmp rdx, 4",
            "jb 3f",
            "mov ecx, [rsi]",
            "mov r8d, [rsi + rdx - 4]",
            "mov [rdi], ecx",
            "mov [rdi + rdx - 4], r8d",
            "ret",
            // 0 to 3 bytes: the first, the second and the last.
            "3:",
            "test rdx, rdx",
            "jz 9f",
            "movzx ecx, byte ptr [rsi]",
            "movzx r8d, byte ptr [rsi + rdx - 1]",
            "cmp rdx, 2",
            "jbe 2f",
            "movzx r9d, byte ptr [rsi + 1]",
            "mov [rdi + 1], r9b",
            "2:",
            "mov [rdi], cl",
            "mov [rdi + rdx - 1], r8b",
            "9:",
            "ret",
            $(concat!(".size ", $label, ", . - ", $label),)*
        );
    };
}

#[cfg(all(target_arch = "x86_64", target_os = "linux", target_env = "musl"))]
copy_forward!("kle_copy_forward", "memcpy", "__memcpy_fwd");
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(target_env = "musl")))]
copy_forward!("kle_copy_forward");

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    unsafe extern "C" {
        fn kle_copy_forward(dest: *mut u8, src: *const u8, n: usize) -> *mut u8;
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + 3) as u8).collect()
    }

    #[test]
    fn copies_every_length_at_every_alignment_and_touches_nothing_else() {
        let src = pattern(700);
        for len in 0..600 {
            for (from, to) in [(0, 0), (1, 3), (7, 0), (0, 15), (13, 9)] {
                let mut dest = vec![0xAA; 700];
                // SAFETY: both ranges lie within their vectors and do not overlap.
                let ret = unsafe {
                    kle_copy_forward(dest.as_mut_ptr().add(to), src.as_ptr().add(from), len)
                };
                assert_eq!(ret, dest.as_mut_ptr().wrapping_add(to), "returns dest");
                assert_eq!(dest[to..to + len], src[from..from + len], "{len} bytes");
                assert!(dest[..to].iter().all(|b| *b == 0xAA), "before, {len}");
                assert!(dest[to + len..].iter().all(|b| *b == 0xAA), "after, {len}");
            }
        }
    }

    #[test]
    fn copies_forwards_onto_an_overlapping_source_as_memmove_needs() {
        for len in 0..600 {
            for shift in [1, 2, 5, 16, 17, 100, 255] {
                let mut buf = pattern(len + shift);
                let want = buf[shift..].to_vec();
                // SAFETY: dest lies before src, as memmove asks of a forward copy.
                unsafe { kle_copy_forward(buf.as_mut_ptr(), buf.as_ptr().add(shift), len) };
                assert_eq!(buf[..len], want[..], "{len} bytes moved down by {shift}");
            }
        }
    }
}
