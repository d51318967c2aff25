package config_test

import (
	"errors"
	"slices"

	"github.com/google/go-cmp/cmp"
)

var cmpSorted = cmp.Transformer("sorted", func(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
})

func errorsAs[T error](err error, target *T) bool { return errors.As(err, target) }
