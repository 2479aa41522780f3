//! The `.wasm`'s allocator: power-of-two size classes, a free list per class, new blocks carved
//! from the end of memory. About a third of the size of the general-purpose allocators we
//! measured (docs/SIZE.md), and enough for what the core allocates: a few strings and vectors
//! of the same few shapes, again and again, in one thread.
//!
//! Why it does not fragment in a long-lived tab: a freed block goes back to its class and the
//! next allocation of that class takes it, so memory never grows past the sum, over the
//! classes, of the most blocks of each class that were ever alive at once, plus the alignment
//! padding paid once per new block (blocks never move between classes).
//! The tab's workload (a token per refresh, a request record per `fetch`) repeats; after the
//! first round every allocation is a reuse. Blocks are never split or merged, so there is no
//! search and nothing to coalesce. The cost is internal: a block is up to twice its request.
//!
//! The logic is here, independent of WebAssembly, so that it is tested natively (below); the
//! wasm glue (`memory.grow` and `GlobalAlloc`) is in `web/mod.rs`.

use core::alloc::Layout;
use core::ptr::null_mut;

/// Classes 2^0 .. 2^31 (the smallest used is a pointer's size: a free block holds the next
/// one's address; 2^2 on wasm32).
const CLASSES: usize = 32;
/// Blocks of class k are aligned to 2^k up to this (a wasm page); larger alignments are refused.
const MAX_ALIGN: usize = 1 << 16;

pub struct Heap {
    /// The first free block of each class (0: none); each holds the next one's address.
    free: [usize; CLASSES],
    /// Where the next new block may start, and the end of the memory we were given.
    next: usize,
    end: usize,
}

impl Heap {
    pub const fn new() -> Self {
        Heap {
            free: [0; CLASSES],
            next: 0,
            end: 0,
        }
    }

    /// The class of a layout: the smallest power of two at least its size, its alignment and a
    /// pointer; `None` if too large.
    pub fn class(layout: Layout) -> Option<usize> {
        let n = layout.size().max(layout.align()).max(size_of::<usize>());
        if n > 1 << (CLASSES - 1) || layout.align() > MAX_ALIGN {
            return None;
        }
        Some((usize::BITS - (n - 1).leading_zeros()) as usize)
    }

    /// A block for `layout`, or null. `grow(bytes)` must hand over at least `bytes` more bytes
    /// of memory nobody else uses: the start of that region and its length, or `None`.
    ///
    /// # Safety
    /// The free lists must hold only blocks this heap handed out and `dealloc` took back, and
    /// the memory `grow` returns must be valid for reads and writes for the program's life.
    pub unsafe fn alloc(
        &mut self,
        layout: Layout,
        grow: impl FnOnce(usize) -> Option<(usize, usize)>,
    ) -> *mut u8 {
        let Some(k) = Self::class(layout) else {
            return null_mut();
        };
        let head = self.free[k];
        if head != 0 {
            // SAFETY: a free block of class k (at least a pointer wide, aligned to one) holds
            // the address of the next free block of its class.
            self.free[k] = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        let size = 1usize << k;
        let align = size.min(MAX_ALIGN);
        let carve = |next: usize, end: usize| {
            let at = next.checked_add(align - 1)? & !(align - 1);
            let stop = at.checked_add(size)?;
            (stop <= end).then_some((at, stop))
        };
        let (at, stop) = match carve(self.next, self.end) {
            Some(fits) => fits,
            None => {
                let Some((start, len)) = size.checked_add(align).and_then(grow) else {
                    return null_mut();
                };
                // Memory that does not follow ours: what was left at our end stays unused.
                if start != self.end {
                    self.next = start;
                }
                self.end = start.saturating_add(len);
                match carve(self.next, self.end) {
                    Some(fits) => fits,
                    None => return null_mut(),
                }
            }
        };
        self.next = stop;
        at as *mut u8
    }

    /// Takes back a block `alloc` handed out for the same `layout`.
    ///
    /// # Safety
    /// `ptr` came from `alloc` with `layout` and is not used after this.
    pub unsafe fn dealloc(&mut self, ptr: *mut u8, layout: Layout) {
        let Some(k) = Self::class(layout) else {
            return;
        };
        // SAFETY: the block is ours again, at least a pointer wide and aligned to one.
        unsafe { *(ptr as *mut usize) = self.free[k] };
        self.free[k] = ptr as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A heap over a fixed arena, handed out 64 KiB at a time like `memory.grow`.
    struct Arena {
        heap: Heap,
        _mem: Vec<u128>,
        base: usize,
        len: usize,
        given: usize,
    }

    impl Arena {
        fn new(pages: usize) -> Self {
            let mut mem = vec![0u128; pages * 65536 / 16 + 65536 / 16];
            // Page-aligned start, as wasm memory is.
            let raw = mem.as_mut_ptr() as usize;
            let base = (raw + 65535) & !65535;
            Arena {
                heap: Heap::new(),
                _mem: mem,
                base,
                len: pages * 65536,
                given: 0,
            }
        }

        fn alloc(&mut self, size: usize, align: usize) -> *mut u8 {
            let layout = Layout::from_size_align(size, align).unwrap();
            let (base, len, given) = (self.base, self.len, &mut self.given);
            unsafe {
                self.heap.alloc(layout, |bytes| {
                    let pages = bytes.div_ceil(65536);
                    if *given + pages * 65536 > len {
                        return None;
                    }
                    let start = base + *given;
                    *given += pages * 65536;
                    Some((start, pages * 65536))
                })
            }
        }

        fn free(&mut self, ptr: *mut u8, size: usize, align: usize) {
            let layout = Layout::from_size_align(size, align).unwrap();
            unsafe { self.heap.dealloc(ptr, layout) }
        }
    }

    /// xorshift32: reproducible sizes without a dependency.
    fn rng(seed: u32) -> impl FnMut(u32) -> u32 {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x % n
        }
    }

    #[test]
    fn classes_are_the_next_power_of_two_of_size_and_alignment() {
        let c = |s, a| Heap::class(Layout::from_size_align(s, a).unwrap());
        assert_eq!(c(1, 1), Some(3), "at least a pointer");
        assert_eq!(c(8, 8), Some(3));
        assert_eq!(c(9, 1), Some(4));
        assert_eq!(c(3, 64), Some(6), "the alignment counts");
        assert_eq!(c(1000, 8), Some(10));
        assert_eq!(c(1 << 31, 1), Some(31));
        assert_eq!(c((1 << 31) + 1, 1), None, "too large");
        assert_eq!(c(8, 1 << 17), None, "alignment beyond a page");
    }

    #[test]
    fn blocks_are_aligned_never_overlap_and_keep_their_contents() {
        use std::collections::BTreeMap;
        let mut a = Arena::new(512);
        let mut r = rng(0x9e37_79b9);
        let mut live: Vec<(*mut u8, usize, usize, u8)> = Vec::new();
        // Every live block's [start, end): a new block must not meet its neighbours.
        let mut spans: BTreeMap<usize, usize> = BTreeMap::new();
        for i in 0..20_000u32 {
            if live.is_empty() || (live.len() < 500 && r(2) == 0) {
                // Mostly small, sometimes large; alignments up to the 64 KiB cap.
                let size = if r(50) == 0 {
                    1 + r(200_000)
                } else {
                    1 + r(3000)
                } as usize;
                let align = 1 << r(17);
                let p = a.alloc(size, align);
                assert!(!p.is_null());
                let at = p as usize;
                assert_eq!(at % align, 0, "aligned to {align}");
                if let Some((_, end)) = spans.range(..=at).next_back() {
                    assert!(*end <= at, "overlaps the block before it");
                }
                if let Some((start, _)) = spans.range(at..).next() {
                    assert!(at + size <= *start, "overlaps the block after it");
                }
                spans.insert(at, at + size);
                let fill = i as u8;
                unsafe { p.write_bytes(fill, size) };
                live.push((p, size, align, fill));
            } else {
                let (p, size, align, fill) = live.swap_remove(r(live.len() as u32) as usize);
                let bytes = unsafe { core::slice::from_raw_parts(p, size) };
                assert!(
                    bytes.iter().all(|b| *b == fill),
                    "no other block wrote here"
                );
                spans.remove(&(p as usize));
                a.free(p, size, align);
            }
        }
        for (p, size, _, fill) in &live {
            let bytes = unsafe { core::slice::from_raw_parts(*p, *size) };
            assert!(bytes.iter().all(|b| b == fill));
        }
    }

    #[test]
    fn a_repeating_workload_stops_growing_after_its_first_round() {
        // The same round again and again (a tab's refresh cycle): tokens across a class
        // boundary, request records, freed in another order than allocated.
        let mut a = Arena::new(16);
        let shapes = [
            (1000, 1),
            (1100, 1),
            (48, 8),
            (24, 4),
            (900, 1),
            (2000, 1),
            (64, 8),
        ];
        let round = |a: &mut Arena| {
            let held: Vec<_> = shapes
                .iter()
                .map(|&(s, al)| (a.alloc(s, al), s, al))
                .collect();
            for &(p, s, al) in held
                .iter()
                .rev()
                .step_by(2)
                .chain(held.iter().skip(1).step_by(2))
            {
                a.free(p, s, al);
            }
        };
        round(&mut a);
        let after_first = a.heap.next;
        for _ in 0..10_000 {
            round(&mut a);
        }
        assert_eq!(
            a.heap.next, after_first,
            "every later round reuses the first one's blocks"
        );
    }

    #[test]
    fn memory_stays_within_each_class_peak_under_a_random_workload() {
        // However the live set varies, what is carved is at most each class's peak of live
        // blocks, at twice the class size (the block plus at most its alignment padding).
        let mut a = Arena::new(256);
        let mut r = rng(42);
        let mut live: Vec<(*mut u8, usize, usize)> = Vec::new();
        let mut count = [0usize; CLASSES];
        let mut peak = [0usize; CLASSES];
        for _ in 0..100_000 {
            if live.is_empty() || (live.len() < 300 && r(2) == 0) {
                let most = if r(20) == 0 { 20_000 } else { 1500 };
                let size = 1 + r(most) as usize;
                let align = 1 << r(4);
                let k = Heap::class(Layout::from_size_align(size, align).unwrap()).unwrap();
                count[k] += 1;
                peak[k] = peak[k].max(count[k]);
                live.push((a.alloc(size, align), size, align));
            } else {
                let (p, size, align) = live.swap_remove(r(live.len() as u32) as usize);
                count[Heap::class(Layout::from_size_align(size, align).unwrap()).unwrap()] -= 1;
                a.free(p, size, align);
            }
        }
        let bound: usize = (0..CLASSES).map(|k| peak[k] << (k + 1)).sum();
        let used = a.heap.next - a.base;
        assert!(
            used <= bound,
            "{used} bytes carved; each class's peak allows {bound}"
        );
    }

    #[test]
    fn out_of_memory_and_oversized_requests_are_null_not_a_crash() {
        let mut a = Arena::new(2);
        assert!(a.alloc(100_000, 1).is_null(), "more than the arena");
        assert!(!a.alloc(60_000, 1).is_null());
        assert!(a.alloc(70_000, 1).is_null());
        assert!(!a.alloc(16, 8).is_null(), "small blocks still fit");
        let big = Layout::from_size_align(1 << 31, 1).unwrap();
        let grew = core::cell::Cell::new(false);
        let p = unsafe {
            a.heap.alloc(big, |_| {
                grew.set(true);
                None
            })
        };
        assert!(p.is_null() && grew.get());
    }

    #[test]
    fn memory_that_does_not_follow_ours_starts_a_new_region() {
        let mut heap = Heap::new();
        let mut mem = vec![0u128; 8 * 65536 / 16];
        let base = (mem.as_mut_ptr() as usize + 65535) & !65535;
        let l = Layout::from_size_align(40_000, 8).unwrap(); // class 2^16
        // The first grow hands over what was asked: room for two blocks of the class.
        let p1 = unsafe { heap.alloc(l, |bytes| Some((base, bytes))) };
        assert_eq!(p1 as usize, base);
        let p1b = unsafe { heap.alloc(l, |_| panic!("the region has room")) };
        assert_eq!(p1b as usize, base + 65536);
        // The next region leaves a gap (another user of memory.grow in between).
        let p2 = unsafe { heap.alloc(l, |bytes| Some((base + 3 * 65536, bytes))) };
        assert_eq!(p2 as usize, base + 3 * 65536);
        unsafe {
            heap.dealloc(p1, l);
            assert_eq!(heap.alloc(l, |_| None), p1, "freed blocks are reused first");
        }
    }
}
