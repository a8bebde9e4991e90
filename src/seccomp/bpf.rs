//! A seccomp program from a syscall table, written as classic BPF here
//! rather than by `seccompiler`, whose programs test the syscall number
//! against every entry in turn: Docker's default profile became 1,537
//! instructions that every filtered syscall walked from the top, and the
//! kernel walks them again for each of ~450 syscall numbers when it
//! installs the filter (to cache the numbers that are always allowed):
//! 0.7 ms at each container start. Here the number line is cut into
//! stretches that end the same way (a run of syscalls allowed without
//! conditions is one stretch), the number is found among them by binary
//! search, and only a syscall whose rules have argument conditions goes
//! on to a block of its own: Docker's default profile is 182
//! instructions (903 with one search entry per syscall, which the kernel
//! converts and JIT-compiles at every container start).
//!
//! Layout: the architecture check (anything but x86_64 is killed, as
//! seccompiler does), the number loaded, the search tree, then the blocks
//! of the conditional syscalls. Conditional jumps reach at most 255
//! instructions ahead; every longer jump is an unconditional `ja`.

use std::collections::BTreeMap;

use seccompiler::sock_filter;

/// An argument comparison, as the Docker/OCI JSON's `op` names it. 64-bit
/// and unsigned; `MaskedEq(mask)`: `arg & mask == value & mask`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    MaskedEq(u64),
}

/// One condition on argument `arg` (0 to 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub op: Op,
    pub value: u64,
}

impl Cond {
    /// Whether the condition holds for an argument value (the meaning the
    /// generated code must have).
    pub fn holds(&self, arg: u64) -> bool {
        match self.op {
            Op::Eq => arg == self.value,
            Op::Ne => arg != self.value,
            Op::Lt => arg < self.value,
            Op::Le => arg <= self.value,
            Op::Gt => arg > self.value,
            Op::Ge => arg >= self.value,
            Op::MaskedEq(m) => arg & m == self.value & m,
        }
    }
}

/// Syscall number -> its rules: empty, it always matches; otherwise it
/// matches when every condition of one rule holds.
pub type Table = BTreeMap<u32, Vec<Vec<Cond>>>;

/// Whether a syscall matches `table` (the meaning of [`generate`]).
pub fn matches(table: &Table, nr: u32, args: &[u64; 6]) -> bool {
    table.get(&nr).is_some_and(|rules| {
        rules.is_empty()
            || rules
                .iter()
                .any(|r| r.iter().all(|c| c.holds(args[usize::from(c.arg)])))
    })
}

/// The kernel's limit on a filter's length (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const RET_KILL_PROCESS: u32 = 0x8000_0000;

const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const AND_K: u16 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const JA: u16 = 0x05; // BPF_JMP | BPF_JA
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGT: u16 = 0x25; // BPF_JMP | BPF_JGT | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K

/// An instruction, or an unconditional jump to a label resolved once the
/// whole program is laid out.
#[derive(Clone, Copy)]
enum Insn {
    /// code, jt, jf, k
    Op(u16, u8, u8, u32),
    JaTo(usize),
}

fn op(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn::Op(code, jt, jf, k)
}

/// The program: `on_match` for the syscalls `table` matches, `mismatch`
/// for every other x86_64 syscall (the return values: action | data).
pub fn generate(table: &Table, on_match: u32, mismatch: u32) -> Result<Vec<sock_filter>, String> {
    let mut labels = Vec::new();
    // The number line cut into stretches that end the same way: every
    // syscall matched without conditions next to each other is one
    // stretch, every conditional syscall one of its own (its block's
    // label), the numbers between them the mismatch.
    let mut stretches: Vec<(u32, Leaf)> = Vec::new();
    let mut add = |start: u32, leaf: Leaf| {
        let same = matches!(stretches.last(), Some((_, last)) if *last == leaf && !matches!(leaf, Leaf::Block(_)));
        if !same {
            stretches.push((start, leaf));
        }
    };
    let mut next: u64 = 0;
    for (nr, rules) in table {
        if u64::from(*nr) > next {
            add(next as u32, Leaf::Mismatch);
        }
        if rules.is_empty() {
            add(*nr, Leaf::Match);
        } else {
            labels.push(0);
            add(*nr, Leaf::Block(labels.len() - 1));
        }
        next = u64::from(*nr) + 1;
    }
    if next <= u64::from(u32::MAX) {
        add(next as u32, Leaf::Mismatch);
    }
    let mut code = vec![
        op(LD_ABS, 0, 0, 4),
        op(JEQ, 1, 0, AUDIT_ARCH_X86_64),
        op(RET, 0, 0, RET_KILL_PROCESS),
        op(LD_ABS, 0, 0, 0),
    ];
    code.extend(tree(&stretches, on_match, mismatch));
    for ((_, rules), label) in table.iter().filter(|(_, r)| !r.is_empty()).zip(0..) {
        labels[label] = code.len();
        block(rules, on_match, mismatch, &mut labels, &mut code);
    }
    if code.len() > MAX_INSNS {
        return Err(format!(
            "the filter would be {} instructions, more than the kernel's {MAX_INSNS}; name fewer syscalls or argument conditions",
            code.len()
        ));
    }
    code.iter()
        .enumerate()
        .map(|(at, i)| match *i {
            Insn::Op(code, jt, jf, k) => Ok(sock_filter { code, jt, jf, k }),
            Insn::JaTo(label) => Ok(sock_filter {
                code: JA,
                jt: 0,
                jf: 0,
                k: (labels[label] - at - 1) as u32,
            }),
        })
        .collect()
}

/// How a stretch of syscall numbers ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Match,
    Mismatch,
    /// The block of a conditional syscall (its label).
    Block(usize),
}

/// The search for the number (in the accumulator) among `stretches`
/// (their first numbers, ascending, the first 0), in code that jumps only
/// within itself or to labels: split at the middle stretch until one is
/// left, whose end is one instruction.
fn tree(stretches: &[(u32, Leaf)], on_match: u32, mismatch: u32) -> Vec<Insn> {
    if let [(_, leaf)] = stretches {
        return vec![match *leaf {
            Leaf::Match => op(RET, 0, 0, on_match),
            Leaf::Mismatch => op(RET, 0, 0, mismatch),
            Leaf::Block(label) => Insn::JaTo(label),
        }];
    }
    let mid = stretches.len() / 2;
    let left = tree(&stretches[..mid], on_match, mismatch);
    let right = tree(&stretches[mid..], on_match, mismatch);
    let mut code = Vec::with_capacity(left.len() + right.len() + 2);
    match u8::try_from(left.len()) {
        // number >= where the middle stretch starts: over the left half.
        Ok(skip) => code.push(op(JGE, skip, 0, stretches[mid].0)),
        Err(_) => {
            code.push(op(JGE, 0, 1, stretches[mid].0));
            code.push(op(JA, 0, 0, left.len() as u32));
        }
    }
    code.extend(left);
    code.extend(right);
    code
}

/// A conditional syscall's block: its rules in turn, each a run of
/// conditions that falls through to `ret on_match` when all hold; a
/// failed condition jumps to the next rule; after the last, `mismatch`.
fn block(
    rules: &[Vec<Cond>],
    on_match: u32,
    mismatch: u32,
    labels: &mut Vec<usize>,
    code: &mut Vec<Insn>,
) {
    for rule in rules {
        labels.push(0);
        let next_rule = labels.len() - 1;
        for c in rule {
            // The condition, then a jump to the next rule that only a
            // failed condition lands on.
            let cond = condition(c);
            let n = cond.len();
            for (i, (f, pass_fail)) in cond.into_iter().enumerate() {
                // Targets relative to the instruction after this one:
                // pass = just past the trampoline, fail = the trampoline.
                let rel = |t: Target| -> u8 {
                    let to = match t {
                        Target::Next => i + 1,
                        Target::Pass => n + 1,
                        Target::Fail => n,
                    };
                    (to - i - 1) as u8
                };
                let (jt, jf) = match pass_fail {
                    Some((t, f)) => (rel(t), rel(f)),
                    None => (0, 0),
                };
                code.push(op(f.0, jt, jf, f.1));
            }
            code.push(Insn::JaTo(next_rule));
        }
        code.push(op(RET, 0, 0, on_match));
        labels[next_rule] = code.len();
    }
    code.push(op(RET, 0, 0, mismatch));
}

#[derive(Clone, Copy)]
enum Target {
    Next,
    Pass,
    Fail,
}

/// The instructions of one condition: (code, k) and, for jumps, where the
/// true and false branches go.
type CondInsn = ((u16, u32), Option<(Target, Target)>);

fn condition(c: &Cond) -> Vec<CondInsn> {
    use Target::{Fail, Next, Pass};
    // seccomp_data.args[i] at 16 + 8i, little-endian: low word first.
    let lo_at = 16 + 8 * u32::from(c.arg);
    let hi_at = lo_at + 4;
    let value = match c.op {
        Op::MaskedEq(m) => c.value & m,
        _ => c.value,
    };
    let (hi, lo) = ((value >> 32) as u32, value as u32);
    let ld = |at| ((LD_ABS, at), None);
    let j = |code, k, t, f| ((code, k), Some((t, f)));
    match c.op {
        Op::Eq => vec![
            ld(hi_at),
            j(JEQ, hi, Next, Fail),
            ld(lo_at),
            j(JEQ, lo, Pass, Fail),
        ],
        Op::Ne => vec![
            ld(hi_at),
            j(JEQ, hi, Next, Pass),
            ld(lo_at),
            j(JEQ, lo, Fail, Pass),
        ],
        Op::Gt | Op::Ge => vec![
            ld(hi_at),
            j(JGT, hi, Pass, Next),
            j(JEQ, hi, Next, Fail),
            ld(lo_at),
            j(if c.op == Op::Gt { JGT } else { JGE }, lo, Pass, Fail),
        ],
        Op::Lt | Op::Le => vec![
            ld(hi_at),
            j(JGT, hi, Fail, Next),
            j(JEQ, hi, Next, Pass),
            ld(lo_at),
            j(if c.op == Op::Le { JGT } else { JGE }, lo, Fail, Pass),
        ],
        Op::MaskedEq(m) => vec![
            ld(hi_at),
            ((AND_K, (m >> 32) as u32), None),
            j(JEQ, hi, Next, Fail),
            ld(lo_at),
            ((AND_K, m as u32), None),
            j(JEQ, lo, Pass, Fail),
        ],
    }
}

/// Run a program the way the kernel would, for the instructions generated
/// here (tests compare it with [`matches`] and with seccompiler's code).
#[cfg(test)]
pub fn run(prog: &[sock_filter], arch: u32, nr: u32, args: &[u64; 6]) -> u32 {
    let word = |at: u32| -> u32 {
        match at {
            0 => nr,
            4 => arch,
            16..=63 => {
                let a = args[((at - 16) / 8) as usize];
                if (at - 16).is_multiple_of(8) {
                    a as u32
                } else {
                    (a >> 32) as u32
                }
            }
            _ => panic!("load of seccomp_data offset {at}"),
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = &prog[pc];
        let k = i.k;
        let jump = |cond: bool| pc + 1 + usize::from(if cond { i.jt } else { i.jf });
        pc = match i.code {
            LD_ABS => {
                acc = word(k);
                pc + 1
            }
            AND_K => {
                acc &= k;
                pc + 1
            }
            JA => pc + 1 + k as usize,
            JEQ => jump(acc == k),
            JGT => jump(acc > k),
            JGE => jump(acc >= k),
            RET => return k,
            other => panic!("instruction {other:#x} at {pc}"),
        };
    }
}

#[cfg(test)]
/// Argument values around every condition's value and mask, and some
/// others, in every argument position.
pub fn probes(table: &Table) -> Vec<[u64; 6]> {
    let mut values = vec![0, 1, u64::MAX, 1 << 32, (1 << 32) - 1, 0x8000_0000];
    for c in table.values().flatten().flatten() {
        let v = c.value;
        values.extend([v, v.wrapping_add(1), v.wrapping_sub(1), v ^ (1 << 40)]);
        if let Op::MaskedEq(m) = c.op {
            values.extend([m, v | !m, v & m, (v & m) | (1 << 33), (v & m) ^ 1]);
        }
    }
    values.sort_unstable();
    values.dedup();
    let mut out = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let w = values[(i * 7 + 3) % values.len()];
        out.push([*v, w, *v, w, *v, w]);
        out.push([w, *v, w, *v, w, *v]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MATCH: u32 = 0x7fff_0000;
    const MISMATCH: u32 = 0x0005_0001;

    fn check(table: &Table) {
        let prog = generate(table, MATCH, MISMATCH).unwrap();
        let max = table.keys().last().copied().unwrap_or(0) + 3;
        for nr in (0..=max).chain([0x4000_0000, 0x4000_0001, u32::MAX]) {
            for args in probes(table) {
                let want = if matches(table, nr, &args) {
                    MATCH
                } else {
                    MISMATCH
                };
                assert_eq!(
                    run(&prog, AUDIT_ARCH_X86_64, nr, &args),
                    want,
                    "nr {nr} {args:x?}"
                );
            }
        }
        // Another architecture is killed, whatever the number.
        assert_eq!(run(&prog, 0x4000_0003, 0, &[0; 6]), RET_KILL_PROCESS);
    }

    fn cond(arg: u8, op: Op, value: u64) -> Cond {
        Cond { arg, op, value }
    }

    #[test]
    fn every_operator_on_both_words() {
        let ops = [
            Op::Eq,
            Op::Ne,
            Op::Lt,
            Op::Le,
            Op::Gt,
            Op::Ge,
            Op::MaskedEq(0xffff_0000_0000_00ff),
        ];
        for (i, op) in ops.into_iter().enumerate() {
            for value in [0, 7, 1 << 32, (5 << 32) | 9, u64::MAX] {
                let mut t = Table::new();
                t.insert(10 + i as u32, vec![vec![cond(1, op, value)]]);
                check(&t);
            }
        }
    }

    /// Runs of matched numbers, conditional syscalls inside and next to
    /// them, gaps, and a tree whose halves are too long for a conditional
    /// jump (every other number of 0..1200 matched).
    #[test]
    fn stretches_of_numbers_decide_each_number() {
        let mut t = Table::new();
        for nr in [0, 1, 2, 4, 10, 11, 12, 13, 14, 15, 20, 400] {
            t.insert(nr, vec![]);
        }
        for nr in [3, 16, 17, 401] {
            t.insert(nr, vec![vec![cond(0, Op::Eq, u64::from(nr))]]);
        }
        check(&t);
        let prog = generate(&t, MATCH, MISMATCH).unwrap();
        assert!(prog.len() < 60, "{}", prog.len());

        let alternate: Table = (0..1200).step_by(2).map(|nr| (nr, vec![])).collect();
        check(&alternate);
    }

    #[test]
    fn rules_are_alternatives_and_conditions_all_hold() {
        let mut t = Table::new();
        t.insert(0, vec![]);
        t.insert(
            56,
            vec![
                vec![cond(0, Op::MaskedEq(0x7e02_0000), 0)],
                vec![
                    cond(0, Op::Eq, 17),
                    cond(2, Op::Gt, 1 << 33),
                    cond(5, Op::Ne, 0),
                ],
            ],
        );
        t.insert(57, vec![]);
        check(&t);
    }

    /// Far more syscalls and conditions than fit in a conditional jump:
    /// the long jumps go through `ja`.
    #[test]
    fn long_programs_jump_far() {
        let mut t = Table::new();
        for nr in 0..450u32 {
            let rules = match nr % 4 {
                0 => vec![],
                1 => vec![
                    vec![cond((nr % 6) as u8, Op::Ge, u64::from(nr) << 20)],
                    vec![
                        cond(0, Op::MaskedEq(0xff), u64::from(nr & 0xff)),
                        cond(1, Op::Lt, 3),
                    ],
                ],
                _ => continue,
            };
            t.insert(nr, rules);
        }
        let prog = generate(&t, MATCH, MISMATCH).unwrap();
        assert!(prog.len() > 1000, "{}", prog.len());
        // Long jumps in the tree and to the blocks.
        assert!(prog.iter().any(|i| i.code == JA && i.k > 255));
        check(&t);
    }

    #[test]
    fn an_empty_table_never_matches_and_too_long_is_refused() {
        check(&Table::new());
        let mut t = Table::new();
        for nr in 0..1000 {
            t.insert(nr, vec![vec![cond(0, Op::Eq, 1); 2]; 2]);
        }
        let e = generate(&t, MATCH, MISMATCH).unwrap_err();
        assert!(e.contains("more than the kernel's 4096"), "{e}");
    }
}
