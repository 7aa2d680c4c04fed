package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/creditgate/creditgate/pkg/ledger"
)

// The debit's pipelined path. On this kind of machine a round trip to
// PostgreSQL costs the service and the server a socket write each (~30–40 µs
// of CPU apiece on a 2-core VM, the biggest entry of the service's profile),
// so a debit sends its statements in one trip:
//
//	BEGIN; lockRequestSQL (the account's row lock, and the answer stored
//	under the key); debitAnsweredSQL (in its own snapshot, taken once the
//	lock is granted: the debit, and its answer stored as the entry it made);
//	COMMIT
//
// with statements prepared once per connection. When the debit statement
// changes nothing (a replayed or reused key, an unknown or closed account,
// unbooked expired holds, too few credits), the COMMIT commits nothing and
// the general path (apiWrite) decides, under the same rules.

const (
	lockRequestStmt = "creditgate_lock_request"
	debitStmt       = "creditgate_debit_answered"
)

// errStaleStatement marks a debit to run again on another connection.
var errStaleStatement = errors.New("prepared statement out of date on this connection")

// staleStatement reports an error that means the connection's prepared
// statements are out of date: "prepared statement does not exist" (26000)
// or "cached plan must not change result type" (0A000).
func staleStatement(err error) bool {
	pgErr, ok := errors.AsType[*pgconn.PgError](err)
	return ok && (pgErr.Code == "26000" || pgErr.Code == "0A000")
}

// pipelinedDebit runs a debit's common case. done is false when the general
// path must decide (nothing was changed).
func (s *Store) pipelinedDebit(ctx context.Context, r ledger.Request, sp ledger.Spend, render ledger.Render) (ans ledger.Answer, done bool, err error) {
	if s.pool == nil {
		return ans, false, nil // not a handle of Open's: the general path
	}
	// Straight from the pool, past database/sql: the same first-come,
	// first-served queue, less bookkeeping per debit.
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return ans, false, err
	}
	defer pc.Release()
	c := pc.Conn()
	ans, done, err = pipelinedDebitOn(ctx, c, s.mode, r, sp, render)
	if staleStatement(err) {
		// The server no longer has the statement as prepared (a pooler
		// discarded it, or a migration changed what it returns): drop this
		// connection, whose pgx-side record is wrong, and let Debit run
		// again on another.
		_ = c.Close(context.WithoutCancel(ctx))
		return ans, done, fmt.Errorf("%w: %w", errStaleStatement, err)
	}
	if err != nil && c.PgConn().TxStatus() != 'I' {
		// A failed trip leaves the transaction aborted; a connection that
		// cannot roll back is closed, and the pool drops any connection
		// not idle when it comes back.
		_, _ = c.Exec(context.WithoutCancel(ctx), "rollback")
	}
	return ans, done, err
}

// pipelinesIn reports whether the pipelined paths run in statement mode m:
// with statements prepared per connection (cache_statement) or sent whole
// with their parameters (exec, as behind PgBouncer before 1.21); simple
// protocol has no pipelines.
func pipelinesIn(m pgx.QueryExecMode) bool {
	return m == pgx.QueryExecModeCacheStatement || m == pgx.QueryExecModeExec
}

func pipelinedDebitOn(ctx context.Context, c *pgx.Conn, mode pgx.QueryExecMode, r ledger.Request, sp ledger.Spend, render ledger.Render) (ledger.Answer, bool, error) {
	// The answer's status is the renderer's for a success.
	status := render(ledger.EntryView{}, nil).Status
	lockArgs := []any{r.ClerkID, r.Key}
	dargs := append(debitArgs(r, sp), r.Fingerprint, status)

	var p *pipe
	if mode == pgx.QueryExecModeCacheStatement {
		lock, err := c.Prepare(ctx, lockRequestStmt, lockRequestSQL)
		if err != nil {
			return ledger.Answer{}, false, err
		}
		debit, err := c.Prepare(ctx, debitStmt, debitAnsweredSQL)
		if err != nil {
			return ledger.Answer{}, false, err
		}
		p = newPipe(ctx, c)
		p.exec("begin")
		p.query(lock, lockArgs...)
		p.query(debit, dargs...)
	} else {
		p = newPipe(ctx, c)
		p.exec("begin")
		p.querySQL(lockRequestSQL, lockArgs...)
		p.querySQL(debitAnsweredSQL, dargs...)
	}
	p.exec("commit")
	var a account
	var st storedAnswer
	var v ledger.EntryView
	var found, debited bool
	err := p.run(
		nil,
		func(rr *pgconn.ResultReader) (err error) {
			if found = rr.NextRow(); found {
				a, st, err = scanLockRequest(rowOf{c.TypeMap(), rr}, r.ClerkID)
			}
			return err
		},
		func(rr *pgconn.ResultReader) (err error) {
			if debited = rr.NextRow(); debited {
				v, err = scanDebit(rowOf{c.TypeMap(), rr}, r.ClerkID, r, sp)
			}
			return err
		})
	switch {
	case err != nil:
		return ledger.Answer{}, false, err
	case !found:
		return ledger.Answer{}, true, fmt.Errorf("user %s: %w", r.ClerkID, ledger.ErrNotFound)
	case debited:
		return render(v, nil), true, nil
	case st.Status.Valid:
		ans, err := st.answer(r.Fingerprint, a.ClerkID, render)
		return ans, true, err
	}
	return ledger.Answer{}, false, nil
}

// rowOf scans the current row of a result reader.
type rowOf struct {
	m  *pgtype.Map
	rr *pgconn.ResultReader
}

func (r rowOf) Scan(dest ...any) error {
	return pgx.ScanRow(r.m, r.rr.FieldDescriptions(), r.rr.Values(), dest...)
}

// pipe is one trip: statements sent together, then one Sync.
type pipe struct {
	ctx    context.Context
	c      *pgx.Conn
	p      *pgconn.Pipeline
	tracer pgx.QueryTracer
	sent   []pipeItem
	err    error
}

type pipeItem struct {
	sql  string
	args []any
}

func newPipe(ctx context.Context, c *pgx.Conn) *pipe {
	return &pipe{ctx: ctx, c: c, p: c.PgConn().StartPipeline(ctx), tracer: connTracer(c)}
}

// connTracer is the connection's query tracer, looked up once per
// connection (pgx hands its configuration out only as a copy).
func connTracer(c *pgx.Conn) pgx.QueryTracer {
	const key = "creditgate.tracer"
	data := c.PgConn().CustomData()
	if t, seen := data[key]; seen {
		tr, _ := t.(pgx.QueryTracer)
		return tr
	}
	tr := c.Config().Tracer
	data[key] = tr
	return tr
}

// exec queues a statement without parameters or rows (BEGIN, COMMIT).
func (p *pipe) exec(sql string) {
	p.p.SendQueryParams(sql, nil, nil, nil, nil)
	p.sent = append(p.sent, pipeItem{sql: sql})
}

// query queues a prepared statement, its arguments encoded as pgx encodes
// them.
func (p *pipe) query(sd *pgconn.StatementDescription, args ...any) {
	var b pgx.ExtendedQueryBuilder
	if err := b.Build(p.c.TypeMap(), sd, args); err != nil && p.err == nil {
		p.err = fmt.Errorf("encode the arguments of %s: %w", sd.Name, err)
	}
	p.p.SendQueryStatement(sd, b.ParamValues, b.ParamFormats, b.ResultFormats)
	p.sent = append(p.sent, pipeItem{sql: sd.SQL, args: args})
}

// querySQL queues a statement sent whole with its parameters (an unnamed
// statement, whose parameter types the server infers: pgx's exec mode).
func (p *pipe) querySQL(sql string, args ...any) {
	var b pgx.ExtendedQueryBuilder
	if err := b.Build(p.c.TypeMap(), nil, args); err != nil && p.err == nil {
		p.err = fmt.Errorf("encode the arguments of %.40q: %w", sql, err)
	}
	p.p.SendQueryParams(sql, b.ParamValues, nil, b.ParamFormats, b.ResultFormats)
	p.sent = append(p.sent, pipeItem{sql: sql, args: args})
}

// run sends the trip and reads each statement's result, handing the ones
// with rows to read (in the order queued, nil for none); it stops at the
// first error, after which the server skips the rest of the trip.
func (p *pipe) run(read ...func(*pgconn.ResultReader) error) error {
	if p.err != nil {
		_ = p.p.Close()
		return p.err
	}
	if err := p.p.Sync(); err != nil {
		_ = p.p.Close()
		return err
	}
	// The statements are all on their way: a tracer sees them start
	// together, and each end as its result arrives.
	ctxs := make([]context.Context, len(p.sent))
	for i, item := range p.sent {
		ctxs[i] = p.ctx
		if p.tracer != nil {
			ctxs[i] = p.tracer.TraceQueryStart(p.ctx, p.c, pgx.TraceQueryStartData{SQL: item.sql, Args: item.args})
		}
	}
	var firstErr error
	for i, item := range p.sent {
		var tag pgconn.CommandTag
		err := firstErr
		if err == nil {
			var res any
			res, err = p.p.GetResults()
			if err == nil {
				rr, ok := res.(*pgconn.ResultReader)
				if !ok {
					err = fmt.Errorf("pipeline: %T for %q, want its result", res, item.sql)
				} else {
					if i < len(read) && read[i] != nil {
						err = read[i](rr)
					}
					var closeErr error
					tag, closeErr = rr.Close()
					err = errors.Join(err, closeErr)
				}
			}
			firstErr = err
		}
		if p.tracer != nil {
			p.tracer.TraceQueryEnd(ctxs[i], p.c, pgx.TraceQueryEndData{CommandTag: tag, Err: err})
		}
	}
	// Close reads what is left up to the Sync.
	if err := p.p.Close(); firstErr == nil {
		firstErr = err
	}
	return firstErr
}
