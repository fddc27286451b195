// SPDX-License-Identifier: MIT

package tcpconn

import (
	"fmt"
	"sync/atomic"
)

// Budget bounds the receive credit that links sharing it grant beyond their
// starting windows, and so the bytes their peers can make this process
// hold. Every link starts with Config.LinkWindow of credit, which it may
// always use; it grows its window (window auto-tuning, and room for a
// message larger than the window), and gives link credit back early for
// messages that wait for their readers (README, "Flow control"), only with
// bytes reserved from its Budget, and gives them back when its window
// shrinks, the messages are read, or it closes. When the budget is spent, windows
// stop growing and large ones shrink as their readers consume: senders feel
// backpressure (credit is withheld), nothing is dropped.
//
// A Budget is shared by every link whose Config names it; links with no
// Budget in their Config share DefaultBudget, the process's. Give a
// Listener or Client its own (Config.Budget) to isolate it. It is safe for
// concurrent use.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// DefaultBudgetBytes is DefaultBudget's limit: room for a few wide-area
// bulk streams at their largest windows, while a fleet of sockets whose
// messages are never read holds twice its LinkWindow (credit, and held
// messages of unclaimed IDs) plus one message each beyond it (PERFORMANCE.md,
// "Memory budget and windows that grow").
const DefaultBudgetBytes = 256 << 20

// DefaultBudget is shared by every link whose Config has no Budget.
var DefaultBudget = NewBudget(DefaultBudgetBytes)

// NewBudget returns a Budget of limit bytes. A limit of 0 lets no link
// window grow past its LinkWindow.
func NewBudget(limit int64) *Budget {
	if limit < 0 {
		panic(fmt.Sprintf("tcpconn: NewBudget(%d): negative limit", limit))
	}
	return &Budget{limit: limit}
}

// Limit returns the budget's size in bytes.
func (b *Budget) Limit() int64 { return b.limit }

// InUse returns the bytes currently reserved by the links sharing b.
func (b *Budget) InUse() int64 { return b.used.Load() }

// reserve takes n bytes if they fit.
func (b *Budget) reserve(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.limit {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *Budget) release(n int64) { b.used.Add(-n) }

// tight reports that windows should shrink: less than an eighth is left.
func (b *Budget) tight() bool { return b.used.Load() > b.limit-b.limit/8 }
