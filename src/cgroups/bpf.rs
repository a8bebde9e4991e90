//! cgroup v2 device rules: the OCI `linux.resources.devices` list compiled
//! into an eBPF program of type `BPF_PROG_TYPE_CGROUP_DEVICE`, attached to
//! the container's cgroup (the kernel calls it at every open or mknod of a
//! device node by a process of that cgroup). cgroup v1 has the `devices`
//! controller's files instead (`v1.rs`).
//!
//! Semantics, as the v1 controller applies the same list: the rules are
//! read in order and the **last** rule that matches a request decides
//! (allow or deny); no match is a denial. A rule matches when its kind is
//! `a` or the device's kind, its major and minor are `*` or the device's,
//! and the request's access (some of read, write, mknod) is within the
//! rule's. The program checks the rules from the last to the first and
//! returns at the first match.

use super::resources::{DeviceKind, DeviceRule};
use crate::sys::BpfInsn;

// The few opcodes the program uses (linux/bpf.h, linux/bpf_common.h).
const LDX_MEM_W: u8 = 0x61; // dst = *(u32 *)(src + off)
const ALU_MOV_X: u8 = 0xbc; // dst = src (32 bit)
const ALU_AND_K: u8 = 0x54; // dst &= imm (32 bit)
const ALU_RSH_K: u8 = 0x74; // dst >>= imm (32 bit)
const ALU64_MOV_K: u8 = 0xb7; // dst = imm
const JMP_JNE_K: u8 = 0x55; // if dst != imm goto +off
const JMP_JNE_X: u8 = 0x5d; // if dst != src goto +off
const JMP_EXIT: u8 = 0x95;

// Registers: the context arrives in R1 (`struct bpf_cgroup_dev_ctx`:
// u32 access_type = access << 16 | type, u32 major, u32 minor).
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2; // type
const R3: u8 = 3; // access
const R4: u8 = 4; // major
const R5: u8 = 5; // minor

/// `BPF_DEVCG_DEV_*` and `BPF_DEVCG_ACC_*`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> BpfInsn {
    BpfInsn {
        code,
        regs: dst | (src << 4),
        off,
        imm,
    }
}

fn access_bits(access: &str) -> i32 {
    access.chars().fold(0, |a, c| {
        a | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The program for `rules` (already followed by the default rules every
/// container gets).
pub fn device_program(rules: &[DeviceRule]) -> Vec<BpfInsn> {
    let mut p = vec![
        insn(LDX_MEM_W, R2, R1, 0, 0),
        insn(ALU_MOV_X, R3, R2, 0, 0),
        insn(ALU_AND_K, R2, 0, 0, 0xffff),
        insn(ALU_RSH_K, R3, 0, 0, 16),
        insn(LDX_MEM_W, R4, R1, 4, 0),
        insn(LDX_MEM_W, R5, R1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        // Each check jumps past the rest of this rule's block when the
        // request does not match; the offsets are filled in at the end.
        let mut block: Vec<BpfInsn> = Vec::new();
        let mut jumps = Vec::new();
        match rule.kind {
            DeviceKind::All => {}
            DeviceKind::Block | DeviceKind::Char => {
                let kind = if rule.kind == DeviceKind::Block {
                    DEV_BLOCK
                } else {
                    DEV_CHAR
                };
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, R2, 0, 0, kind));
            }
        }
        let acc = access_bits(&rule.access);
        if acc != ACC_READ | ACC_WRITE | ACC_MKNOD {
            // (access & rule's) != access: asks for more than the rule has.
            block.push(insn(ALU_MOV_X, R1, R3, 0, 0));
            block.push(insn(ALU_AND_K, R1, 0, 0, acc));
            jumps.push(block.len());
            block.push(insn(JMP_JNE_X, R1, R3, 0, 0));
        }
        for (reg, n) in [(R4, rule.major), (R5, rule.minor)] {
            if let Some(n) = n {
                jumps.push(block.len());
                block.push(insn(JMP_JNE_K, reg, 0, 0, n as u32 as i32));
            }
        }
        block.push(insn(ALU64_MOV_K, R0, 0, 0, i32::from(rule.allow)));
        block.push(insn(JMP_EXIT, 0, 0, 0, 0));
        let len = block.len();
        let matches_all = jumps.is_empty();
        for j in jumps {
            block[j].off = (len - j - 1) as i16;
        }
        p.extend(block);
        if matches_all {
            // Every request stops here: the verifier refuses code after it
            // (unreachable instructions).
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, R0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the program on one request: a minimal interpreter of exactly
    /// the opcodes above (so the semantics are checked without a kernel;
    /// tests/cgroups.rs checks the kernel's verdicts).
    fn run(p: &[BpfInsn], kind: i32, access: i32, major: u32, minor: u32) -> bool {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = u64::from(ctx[(i.off / 4) as usize]),
                ALU_MOV_X => r[dst] = r[src] & 0xffff_ffff,
                ALU_AND_K => r[dst] = (r[dst] & i.imm as u32 as u64) & 0xffff_ffff,
                ALU_RSH_K => r[dst] = (r[dst] & 0xffff_ffff) >> i.imm,
                ALU64_MOV_K => r[dst] = i.imm as i64 as u64,
                JMP_JNE_K if r[dst] != i.imm as u32 as u64 => pc += i.off as usize,
                JMP_JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JMP_JNE_K | JMP_JNE_X => {}
                JMP_EXIT => return r[0] == 1,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    /// The reference: the last matching rule decides; none is a denial.
    fn reference(rules: &[DeviceRule], kind: i32, access: i32, major: u32, minor: u32) -> bool {
        rules
            .iter()
            .rev()
            .find(|d| {
                let k = match d.kind {
                    DeviceKind::All => true,
                    DeviceKind::Block => kind == DEV_BLOCK,
                    DeviceKind::Char => kind == DEV_CHAR,
                };
                k && access & !access_bits(&d.access) == 0
                    && d.major.is_none_or(|m| m as u32 == major)
                    && d.minor.is_none_or(|m| m as u32 == minor)
            })
            .is_some_and(|d| d.allow)
    }

    fn rule(
        allow: bool,
        kind: DeviceKind,
        maj: Option<i64>,
        min: Option<i64>,
        a: &str,
    ) -> DeviceRule {
        DeviceRule::new(allow, kind, maj, min, a).unwrap()
    }

    #[test]
    fn the_program_decides_as_the_last_matching_rule() {
        use DeviceKind::*;
        let lists = vec![
            vec![],
            // An engine's list: deny all, then the defaults.
            vec![
                rule(false, All, None, None, "rwm"),
                rule(true, Char, None, None, "m"),
                rule(true, Block, None, None, "m"),
                rule(true, Char, Some(1), Some(3), "rwm"),
                rule(true, Char, Some(1), Some(9), "rwm"),
                rule(true, Char, Some(136), None, "rwm"),
                rule(true, Char, Some(10), Some(200), "rw"),
            ],
            // Allow everything, then take some back.
            vec![
                rule(true, All, None, None, "rwm"),
                rule(false, Char, Some(1), Some(11), "w"),
                rule(false, Block, Some(8), None, "rwm"),
            ],
            vec![
                rule(true, Char, Some(4), None, "r"),
                rule(false, Char, None, Some(1), "rw"),
            ],
            // A rule matching everything in the middle hides the earlier ones.
            vec![
                rule(true, Char, Some(1), Some(3), "rwm"),
                rule(false, All, None, None, "rwm"),
                rule(true, Char, Some(1), Some(7), "r"),
            ],
        ];
        let kinds = [DEV_BLOCK, DEV_CHAR];
        let devices = [
            (1, 3),
            (1, 9),
            (1, 11),
            (4, 1),
            (4, 2),
            (8, 0),
            (8, 1),
            (10, 200),
            (136, 7),
            (0xffff_ffff, 0),
        ];
        let mut checked = 0;
        for rules in &lists {
            let p = device_program(rules);
            for &kind in &kinds {
                for access in 1..8 {
                    for &(maj, min) in &devices {
                        assert_eq!(
                            run(&p, kind, access, maj, min),
                            reference(rules, kind, access, maj, min),
                            "rules {rules:?}: kind {kind} access {access} {maj}:{min}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 2 * 7 * 10);
    }
}
