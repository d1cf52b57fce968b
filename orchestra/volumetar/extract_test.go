package volumetar

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// refusal is a hostile archive. outside is the absolute path of a directory
// next to the root; entry is what the error must name.
type refusal struct {
	name    string
	archive func(t testing.TB, outside string) []byte
	setup   func(t testing.TB, s sandbox) // files already in the root
	entry   string
	reason  string
	fsOnly  bool // the refusal needs the root's contents: Check passes it
}

// refusals is every hostile archive the package must refuse.
func refusals() []refusal {
	return slices.Concat(nameRefusals(), linkRefusals(), typeRefusals(), filesystemRefusals())
}

// ents builds an archive from entries that may name the outside directory.
func ents(f func(outside string) []ent) func(testing.TB, string) []byte {
	return func(t testing.TB, outside string) []byte { return tarOf(t, f(outside)...) }
}

// rawOf builds an archive from hand-made blocks.
func rawOf(parts ...[]byte) func(testing.TB, string) []byte {
	return func(testing.TB, string) []byte { return raw(parts...) }
}

func nameRefusals() []refusal {
	long := strings.Repeat("n/", MaxNameBytes/2+1) + "x"
	return []refusal{
		{name: "absolute name", archive: ents(func(o string) []ent { return []ent{reg(o+"/planted", "x")} }),
			entry: "/planted", reason: "absolute name"},
		{name: "dotdot", archive: ents(func(string) []ent { return []ent{reg("../outside/planted", "x")} }),
			entry: "../outside/planted", reason: `climbs out`},
		{name: "dotdot after cleaning", archive: ents(func(string) []ent { return []ent{reg("a/../../outside/planted", "x")} }),
			entry: "a/../../outside/planted", reason: `climbs out`},
		{name: "oversized PAX record", archive: ents(func(string) []ent {
			e := reg("big", "x")
			e.h.PAXRecords = map[string]string{"comment": strings.Repeat("x", 100<<10)}
			return []ent{reg("first", ""), e}
		}), entry: `#2 (after "first")`, reason: "headers over"},
		{name: "oversized GNU long name", archive: ents(func(string) []ent {
			e := reg(strings.Repeat("g", 70<<10), "x")
			e.h.Format = tar.FormatGNU
			return []ent{e}
		}), entry: "#1", reason: "headers over"},
		{name: "name over MaxNameBytes", archive: ents(func(string) []ent { return []ent{reg(long, "x")} }),
			entry: long[:200], reason: "over the 4096-byte limit"},
		{name: "component over MaxComponentBytes", archive: ents(func(string) []ent {
			return []ent{reg("d/"+strings.Repeat("c", 300), "x")}
		}), entry: "d/ccc", reason: "path component of 300 bytes"},
		{name: "symlink target over MaxNameBytes", archive: ents(func(string) []ent {
			return []ent{symlinkEnt("s", strings.Repeat("t", MaxNameBytes+1))}
		}), entry: "s", reason: "symlink target of 4097 bytes"},
		{name: "file named as the root", archive: ents(func(string) []ent { return []ent{reg("a/..", "x")} }),
			entry: "a/..", reason: "names the root"},
		{name: "empty name", archive: ents(func(string) []ent { return []ent{reg("", "x")} }),
			entry: `""`, reason: "empty name"},
	}
}

func linkRefusals() []refusal {
	return []refusal{
		{name: "write through archive symlink to outside", archive: ents(func(o string) []ent {
			return []ent{symlinkEnt("l", o), reg("l/planted", "x")}
		}), entry: "l/planted", reason: "a link made earlier"},
		{name: "write through relative archive symlink", archive: ents(func(string) []ent {
			return []ent{symlinkEnt("l", "../outside"), dirEnt("l/sub/")}
		}), entry: "l/sub/", reason: "a link made earlier"},
		{name: "write through archive symlink inside root", archive: ents(func(string) []ent {
			return []ent{dirEnt("d/"), symlinkEnt("l", "d"), reg("l/x", "x")}
		}), entry: "l/x", reason: "a link made earlier"},
		{name: "write through hard link to archive symlink", archive: ents(func(o string) []ent {
			return []ent{symlinkEnt("s", o), hardlinkEnt("h", "s"), reg("h/planted", "x")}
		}), entry: "h/planted", reason: "a link made earlier"},
		{name: "hard link to absolute path", archive: ents(func(o string) []ent { return []ent{hardlinkEnt("h", o+"/secret")} }),
			entry: "h", reason: "absolute path"},
		{name: "hard link climbing out", archive: ents(func(string) []ent { return []ent{hardlinkEnt("h", "../outside/secret")} }),
			entry: "h", reason: "outside the root"},
		{name: "hard link through archive symlink", archive: ents(func(o string) []ent {
			return []ent{symlinkEnt("s", o), hardlinkEnt("h", "s/secret")}
		}), entry: "h", reason: "a link made earlier"},
		{name: "hard link to itself", archive: ents(func(string) []ent { return []ent{hardlinkEnt("h", "./h")} }),
			entry: "h", reason: "itself"},
		{name: "hard link without target", archive: ents(func(string) []ent { return []ent{hardlinkEnt("h", "")} }),
			entry: "h", reason: "without a target"},
	}
}

func typeRefusals() []refusal {
	return []refusal{
		{name: "char device", archive: rawOf(rawHeader("null", tar.TypeChar, 0, "", false)), entry: "null", reason: "device node"},
		{name: "block device", archive: rawOf(rawHeader("sda", tar.TypeBlock, 0, "", false)), entry: "sda", reason: "device node"},
		{name: "fifo", archive: rawOf(rawHeader("pipe", tar.TypeFifo, 0, "", false)), entry: "pipe", reason: "fifo"},
		{name: "old GNU sparse file", archive: rawOf(rawHeader("sparse", tar.TypeGNUSparse, 0, "", true)),
			entry: "sparse", reason: "sparse file"},
		{name: "PAX sparse file", archive: rawOf(
			rawEntry("PaxHeaders/sparse", tar.TypeXHeader, []byte(paxRecord("GNU.sparse.major", "0")+
				paxRecord("GNU.sparse.minor", "1")+paxRecord("GNU.sparse.size", "1099511627776")+
				paxRecord("GNU.sparse.numblocks", "0")+paxRecord("GNU.sparse.map", ""))),
			rawHeader("sparse", tar.TypeReg, 0, "", false)), entry: "sparse", reason: "sparse file"},
		{name: "contiguous file type", archive: rawOf(rawEntry("c", tar.TypeCont, []byte("x"))), entry: "c", reason: "unsupported entry type"},
		{name: "GNU volume header", archive: rawOf(rawHeader("vol", 'V', 0, "", true)), entry: "vol", reason: "unsupported entry type"},
		{name: "directory with data", archive: rawOf(rawEntry("d/", tar.TypeDir, bytes.Repeat([]byte{'x'}, 600))),
			entry: "d/", reason: "declares 600 bytes"},
		{name: "symlink with data", archive: rawOf(rawEntry("s", tar.TypeSymlink, []byte("x"))),
			entry: "s", reason: "declares 1 bytes"},
	}
}

// filesystemRefusals need the root's contents, so only Extract sees them.
func filesystemRefusals() []refusal {
	return []refusal{
		{name: "write through existing symlink to outside", setup: preSymlink("pre", "OUTSIDE"), fsOnly: true,
			archive: ents(func(string) []ent { return []ent{reg("pre/planted", "x")} }),
			entry:   "pre/planted", reason: "leads outside the root"},
		{name: "write through existing relative symlink climbing out", setup: preSymlink("rel", "../outside"), fsOnly: true,
			archive: ents(func(string) []ent { return []ent{dirEnt("rel/newdir/")} }),
			entry:   "rel/newdir/", reason: "leads outside the root"},
		{name: "write through chain of existing symlinks", fsOnly: true,
			setup: func(t testing.TB, s sandbox) {
				preSymlink("a", "b")(t, s)
				preSymlink("b", "OUTSIDE")(t, s)
			},
			archive: ents(func(string) []ent { return []ent{reg("a/planted", "x")} }),
			entry:   "a/planted", reason: "leads outside the root"},
		{name: "hard link through existing symlink to outside", setup: preSymlink("pre", "OUTSIDE"), fsOnly: true,
			archive: ents(func(string) []ent { return []ent{hardlinkEnt("h", "pre/secret")} }),
			entry:   "h", reason: "leads outside the root"},
	}
}

// preSymlink makes root/name a symlink to target, OUTSIDE standing for the
// outside directory's absolute path.
func preSymlink(name, target string) func(testing.TB, sandbox) {
	return func(t testing.TB, s sandbox) {
		t.Helper()
		target := strings.ReplaceAll(target, "OUTSIDE", s.outside)
		if err := os.Symlink(target, filepath.Join(s.root, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExtractRefusals(t *testing.T) {
	for _, tc := range refusals() {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			if tc.setup != nil {
				tc.setup(t, s)
			}
			err := Extract(context.Background(), s.root, bytes.NewReader(tc.archive(t, s.outside)))
			assertRefusal(t, err, tc)
			s.assertUntouched(t)
		})
	}
}

func TestCheckRefusals(t *testing.T) {
	for _, tc := range refusals() {
		t.Run(tc.name, func(t *testing.T) {
			data := tc.archive(t, "/nonexistent-outside")
			out, err := io.ReadAll(Check(bytes.NewReader(data)))
			if tc.fsOnly {
				if err != nil || !bytes.Equal(out, data) {
					t.Fatalf("Check refused an archive that only the filesystem makes unsafe: %v", err)
				}
				return
			}
			assertRefusal(t, err, tc)
			if !bytes.HasPrefix(data, out) {
				t.Fatal("Check's output is not a prefix of its input")
			}
		})
	}
}

func assertRefusal(t *testing.T, err error, tc refusal) {
	t.Helper()
	if !errors.Is(err, ErrUnsafeEntry) {
		t.Fatalf("err = %v, want ErrUnsafeEntry", err)
	}
	for _, want := range []string{tc.entry, tc.reason} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}
