//go:build !cgo

package main

import "errors"

// Without cgo kilnbench cannot load libsqlite3, and the storage figures with
// a sqlite baseline report themselves as not measured.

type sqliteDB struct{}

type sqliteStmt struct{}

var errNoCgo = errors.New("kilnbench was built without cgo: the in-process sqlite baseline needs it")

func sqliteOpen(string) (*sqliteDB, error)            { return nil, errNoCgo }
func sqliteVersion() string                           { return "?" }
func (*sqliteDB) Exec(string) error                   { return errNoCgo }
func (*sqliteDB) Prepare(string) (*sqliteStmt, error) { return nil, errNoCgo }
func (*sqliteStmt) Run(...string) (int, error)        { return 0, errNoCgo }
func (*sqliteStmt) Close()                            {}
func (*sqliteDB) Close() error                        { return errNoCgo }
