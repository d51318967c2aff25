//go:build cgo

package main

// The storage group's sqlite baseline runs in process, through the system's
// libsqlite3.so.0 (the very library the sqlite3 shell links), so kiln and
// sqlite are timed the same way: one call, Go's clock around it. The library
// is dlopened rather than linked, so building kilnbench needs no sqlite
// headers and a machine without the library reports the figures as not
// measured. Each timed call is one cgo call; a query's rows are stepped and
// their text read in C, as a C caller would.

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

typedef struct sqlite3 sqlite3;
typedef struct sqlite3_stmt sqlite3_stmt;

static int (*kb_open_v2)(const char *, sqlite3 **, int, const char *);
static int (*kb_close_v2)(sqlite3 *);
static int (*kb_exec)(sqlite3 *, const char *, void *, void *, char **);
static int (*kb_prepare_v2)(sqlite3 *, const char *, int, sqlite3_stmt **, const char **);
static int (*kb_bind_text)(sqlite3_stmt *, int, const char *, int, void (*)(void *));
static int (*kb_step)(sqlite3_stmt *);
static const unsigned char *(*kb_column_text)(sqlite3_stmt *, int);
static int (*kb_reset)(sqlite3_stmt *);
static int (*kb_finalize)(sqlite3_stmt *);
static const char *(*kb_errmsg)(sqlite3 *);
static const char *(*kb_libversion)(void);

// kb_load resolves the functions once; it returns NULL or dlerror's text.
static const char *kb_load(void) {
	void *h = dlopen("libsqlite3.so.0", RTLD_NOW);
	if (!h) return dlerror();
#define KB_SYM(v, name) if (!(*(void **)(&v) = dlsym(h, name))) return dlerror();
	KB_SYM(kb_open_v2, "sqlite3_open_v2")
	KB_SYM(kb_close_v2, "sqlite3_close_v2")
	KB_SYM(kb_exec, "sqlite3_exec")
	KB_SYM(kb_prepare_v2, "sqlite3_prepare_v2")
	KB_SYM(kb_bind_text, "sqlite3_bind_text")
	KB_SYM(kb_step, "sqlite3_step")
	KB_SYM(kb_column_text, "sqlite3_column_text")
	KB_SYM(kb_reset, "sqlite3_reset")
	KB_SYM(kb_finalize, "sqlite3_finalize")
	KB_SYM(kb_errmsg, "sqlite3_errmsg")
	KB_SYM(kb_libversion, "sqlite3_libversion")
	return NULL;
}

static int kb_open(const char *path, sqlite3 **db) {
	return kb_open_v2(path, db, 0x2 | 0x4 | 0x8000, NULL); // READWRITE|CREATE|NOMUTEX
}
static int kb_close(sqlite3 *db) { return kb_close_v2(db); }
static int kb_exec_sql(sqlite3 *db, const char *sql) { return kb_exec(db, sql, NULL, NULL, NULL); }
static int kb_prepare(sqlite3 *db, const char *sql, sqlite3_stmt **st) { return kb_prepare_v2(db, sql, -1, st, NULL); }
static int kb_final(sqlite3_stmt *st) { return kb_finalize(st); }
static const char *kb_err(sqlite3 *db) { return kb_errmsg(db); }
static const char *kb_version(void) { return kb_libversion(); }

// kb_run binds n (at most 3) text arguments (SQLITE_TRANSIENT: sqlite
// copies them), steps to the end reading every row's first column as text,
// and resets. It returns the last step's code (101, SQLITE_DONE, on
// success) and the number of rows in *rows.
static int kb_run(sqlite3_stmt *st, int n, const char *a0, int l0, const char *a1, int l1, const char *a2, int l2, long long *rows) {
	int rc = 0;
	*rows = 0;
	if (n > 0 && (rc = kb_bind_text(st, 1, a0, l0, (void (*)(void *))-1)) != 0) return rc;
	if (n > 1 && (rc = kb_bind_text(st, 2, a1, l1, (void (*)(void *))-1)) != 0) return rc;
	if (n > 2 && (rc = kb_bind_text(st, 3, a2, l2, (void (*)(void *))-1)) != 0) return rc;
	while ((rc = kb_step(st)) == 100) { // SQLITE_ROW
		if (kb_column_text(st, 0) != NULL) (*rows)++;
	}
	kb_reset(st);
	return rc;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

var sqliteLoad = sync.OnceValue(func() error {
	if e := C.kb_load(); e != nil {
		return fmt.Errorf("load libsqlite3.so.0: %s", C.GoString(e))
	}
	return nil
})

// sqliteDB is one connection, used from one goroutine.
type sqliteDB struct{ db *C.sqlite3 }

// sqliteStmt is a prepared statement of a sqliteDB.
type sqliteStmt struct {
	db *sqliteDB
	st *C.sqlite3_stmt
}

func sqliteOpen(path string) (*sqliteDB, error) {
	if err := sqliteLoad(); err != nil {
		return nil, err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var db *C.sqlite3
	if rc := C.kb_open(cpath, &db); rc != 0 {
		msg := "out of memory"
		if db != nil {
			msg = C.GoString(C.kb_err(db))
			C.kb_close(db)
		}
		return nil, fmt.Errorf("sqlite open %s: %s (code %d)", path, msg, rc)
	}
	return &sqliteDB{db: db}, nil
}

// sqliteVersion is the loaded library's version, for the figures' detail.
func sqliteVersion() string {
	if sqliteLoad() != nil {
		return "?"
	}
	return C.GoString(C.kb_version())
}

func (d *sqliteDB) err(what string, rc C.int) error {
	return fmt.Errorf("sqlite %s: %s (code %d)", what, C.GoString(C.kb_err(d.db)), rc)
}

// Exec runs one or more statements that take no arguments.
func (d *sqliteDB) Exec(sql string) error {
	c := C.CString(sql)
	defer C.free(unsafe.Pointer(c))
	if rc := C.kb_exec_sql(d.db, c); rc != 0 {
		return d.err(fmt.Sprintf("%.60q", sql), rc)
	}
	return nil
}

func (d *sqliteDB) Prepare(sql string) (*sqliteStmt, error) {
	c := C.CString(sql)
	defer C.free(unsafe.Pointer(c))
	var st *C.sqlite3_stmt
	if rc := C.kb_prepare(d.db, c, &st); rc != 0 {
		return nil, d.err(fmt.Sprintf("prepare %.60q", sql), rc)
	}
	return &sqliteStmt{db: d, st: st}, nil
}

// Run binds args (at most 3), steps the statement to its end and returns
// how many rows it produced: one cgo call.
func (s *sqliteStmt) Run(args ...string) (int, error) {
	if len(args) > 3 {
		return 0, errors.New("sqlite: more than 3 arguments")
	}
	// The arguments' bytes are passed as Go pointers to memory holding no
	// pointers, which cgo allows for the length of the call.
	var ptr [3]*C.char
	var n [3]C.int
	for i, a := range args {
		if len(a) > 0 {
			ptr[i] = (*C.char)(unsafe.Pointer(unsafe.StringData(a)))
		}
		n[i] = C.int(len(a))
	}
	var rows C.longlong
	if rc := C.kb_run(s.st, C.int(len(args)), ptr[0], n[0], ptr[1], n[1], ptr[2], n[2], &rows); rc != 101 {
		return 0, s.db.err("step", rc)
	}
	return int(rows), nil
}

func (s *sqliteStmt) Close() { C.kb_final(s.st) }

func (d *sqliteDB) Close() error {
	if rc := C.kb_close(d.db); rc != 0 {
		return d.err("close", rc)
	}
	return nil
}
