package orchestra

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// fakeInit returns an InitFunc that reports which registration it was.
func fakeInit(tag string) InitFunc {
	return func(string, *slog.Logger) (Driver, error) { return nil, fmt.Errorf("%s", tag) }
}

func tagOf(t *testing.T, init InitFunc) string {
	t.Helper()
	_, err := init("ns", nil)
	if err == nil {
		t.Fatal("fake InitFunc returned no error")
	}
	return err.Error()
}

func TestEachInNameOrder(t *testing.T) {
	for _, name := range []string{"test-each-c", "test-each-a", "test-each-b"} {
		Add(name, fakeInit(name))
	}
	var got []string
	Each(func(name string, init InitFunc) {
		if !strings.HasPrefix(name, "test-each-") {
			return
		}
		if tag := tagOf(t, init); tag != name {
			t.Errorf("Each gave %q the InitFunc of %q", name, tag)
		}
		got = append(got, name)
	})
	if want := "test-each-a test-each-b test-each-c"; strings.Join(got, " ") != want {
		t.Fatalf("Each order: expected %q, got %q", want, strings.Join(got, " "))
	}
	// fn may use the registry: Each does not hold the lock while calling it.
	Each(func(name string, _ InitFunc) {
		if name == "test-each-a" {
			Replace("test-each-a", fakeInit("again"))
			if _, ok := Get("test-each-b"); !ok {
				t.Error("Get inside Each: test-each-b missing")
			}
		}
	})
}

func TestAddRefusesDuplicate(t *testing.T) {
	Add("test-dup", fakeInit("first"))
	tests := []struct {
		name string
		call func()
		want string
	}{
		{"duplicate", func() { Add("test-dup", fakeInit("second")) }, `orchestra: Add called twice for driver "test-dup"`},
		{"empty name", func() { Add("", fakeInit("x")) }, "empty driver name"},
		{"nil init", func() { Add("test-nil", nil) }, `nil InitFunc for driver "test-nil"`},
		{"replace nil init", func() { Replace("test-nil", nil) }, `nil InitFunc for driver "test-nil"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Fatalf("expected a panic containing %q, got %v", tt.want, r)
				}
			}()
			tt.call()
		})
	}
	init, _ := Get("test-dup")
	if tag := tagOf(t, init); tag != "first" {
		t.Fatalf("after a refused duplicate Add: expected the first registration, got %q", tag)
	}
	if _, ok := Get("test-nil"); ok {
		t.Fatal("a refused nil InitFunc was registered")
	}
}

func TestReplace(t *testing.T) {
	if Replace("test-replace", fakeInit("first")) {
		t.Fatal("Replace of a new name reported that it replaced something")
	}
	if !Replace("test-replace", fakeInit("second")) {
		t.Fatal("Replace of a registered name reported that it replaced nothing")
	}
	init, _ := Get("test-replace")
	if tag := tagOf(t, init); tag != "second" {
		t.Fatalf("after Replace: expected the second registration, got %q", tag)
	}
}
