//! A transaction's scan: the snapshot's entries merged with the
//! transaction's own writes, which win on equal keys (a buffered delete
//! hides the key).

use std::collections::VecDeque;

use crate::error::Result;
use crate::iter::Scan;

const BASE_BATCH: usize = 256;
const BASE_BATCH_BYTES: usize = 1 << 20;

pub struct TxnScan {
    base: Scan,
    buffered: VecDeque<(Vec<u8>, Vec<u8>)>,
    base_done: bool,
    own: VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
    reverse: bool,
    limit: Option<usize>,
    returned: usize,
}

impl TxnScan {
    pub(crate) fn new(
        base: Scan,
        own: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        reverse: bool,
        limit: Option<usize>,
    ) -> Self {
        TxnScan {
            base,
            buffered: VecDeque::new(),
            base_done: false,
            own: own.into(),
            reverse,
            limit,
            returned: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.limit.is_some_and(|l| self.returned >= l)
            || (self.own.is_empty() && self.buffered.is_empty() && self.base_done)
    }

    /// Like `Scan::next_batch`.
    pub fn next_batch(
        &mut self,
        max_entries: usize,
        max_bytes: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        let mut bytes = 0;
        while out.len() < max_entries.max(1) && bytes < max_bytes.max(1) {
            if self.limit.is_some_and(|l| self.returned >= l) {
                break;
            }
            if self.buffered.is_empty() && !self.base_done {
                let more = self.base.next_batch(BASE_BATCH, BASE_BATCH_BYTES)?;
                self.base_done = more.is_empty();
                self.buffered.extend(more);
            }
            let take_own = match (self.own.front(), self.buffered.front()) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some((bk, _))) => {
                    if ok == bk {
                        self.buffered.pop_front(); // shadowed by our write
                        true
                    } else {
                        (ok < bk) != self.reverse
                    }
                }
            };
            let entry = if take_own {
                match self.own.pop_front() {
                    Some((k, Some(v))) => Some((k, v)),
                    _ => None, // a buffered delete
                }
            } else {
                self.buffered.pop_front()
            };
            if let Some((k, v)) = entry {
                bytes += k.len() + v.len();
                out.push((k, v));
                self.returned += 1;
            }
        }
        Ok(out)
    }
}
