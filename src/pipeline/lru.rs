//! Least-recently-active lists for the session table: doubly linked lists
//! of slot numbers threaded through a `[Link]` array (one link per slot),
//! front = most recent.
//!
//! In: slot numbers pushed, moved to the front when seen, removed when
//! freed. Out: the tail (the least recently active slot, which eviction
//! takes). O(1) per operation and no allocation: the links live in the
//! caller's vectors, one entry per slot.

/// No slot: the end of a list.
pub(super) const NIL: u32 = u32::MAX;

/// A slot's neighbours in one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Link {
    prev: u32,
    next: u32,
}

impl Link {
    pub(super) const NONE: Link = Link {
        prev: NIL,
        next: NIL,
    };
}

/// A doubly linked list of slots threaded through a `[Link]` (one link
/// per slot): front = most recent. The caller knows which list a slot is
/// in; every operation is O(1) and allocates nothing.
#[derive(Clone, Copy, Debug)]
pub(super) struct List {
    head: u32,
    tail: u32,
}

impl List {
    pub(super) const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };

    pub(super) fn push_front(&mut self, links: &mut [Link], i: usize) {
        let i32 = i as u32;
        links[i] = Link {
            prev: NIL,
            next: self.head,
        };
        match self.head {
            NIL => self.tail = i32,
            h => links[h as usize].prev = i32,
        }
        self.head = i32;
    }

    pub(super) fn remove(&mut self, links: &mut [Link], i: usize) {
        let Link { prev, next } = links[i];
        match prev {
            NIL => self.head = next,
            p => links[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => links[n as usize].prev = prev,
        }
        links[i] = Link::NONE;
    }

    /// Moves `i` (in this list) to the front.
    #[inline]
    pub(super) fn move_to_front(&mut self, links: &mut [Link], i: usize) {
        if self.head != i as u32 {
            self.remove(links, i);
            self.push_front(links, i);
        }
    }

    pub(super) fn tail(&self) -> Option<usize> {
        (self.tail != NIL).then_some(self.tail as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists keep their order through moves and removals.
    #[test]
    fn lists_keep_recency_order() {
        let mut links = vec![Link::NONE; 5];
        let mut l = List::EMPTY;
        let order = |l: &List, links: &[Link]| {
            let mut v = Vec::new();
            let mut at = l.head;
            while at != NIL {
                v.push(at as usize);
                at = links[at as usize].next;
            }
            // And backwards.
            let mut back = Vec::new();
            let mut at = l.tail;
            while at != NIL {
                back.push(at as usize);
                at = links[at as usize].prev;
            }
            back.reverse();
            assert_eq!(v, back);
            v
        };
        for i in 0..5 {
            l.push_front(&mut links, i);
        }
        assert_eq!(order(&l, &links), [4, 3, 2, 1, 0]);
        assert_eq!(l.tail(), Some(0));
        l.move_to_front(&mut links, 0);
        assert_eq!(order(&l, &links), [0, 4, 3, 2, 1]);
        l.move_to_front(&mut links, 0);
        assert_eq!(order(&l, &links), [0, 4, 3, 2, 1]);
        l.remove(&mut links, 3);
        l.remove(&mut links, 1);
        assert_eq!(order(&l, &links), [0, 4, 2]);
        assert_eq!(l.tail(), Some(2));
        l.remove(&mut links, 0);
        l.remove(&mut links, 4);
        l.remove(&mut links, 2);
        assert_eq!(order(&l, &links), Vec::<usize>::new());
        assert_eq!(l.tail(), None);
    }
}
