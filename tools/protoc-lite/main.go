// Command protoc-lite compiles .proto files in Go (github.com/bufbuild/protocompile)
// and runs protoc plugins on them, as protoc does, so that generating the
// wire code needs no system protoc. It supports what this repository uses:
//
//	protoc-lite -I DIR -plugin NAME=PATH... -opt NAME=OPTIONS... -out DIR FILE.proto...
//
// Each plugin NAME gets a CodeGeneratorRequest for the files named on the
// command line, with parameter OPTIONS, and its files are written under -out.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/protoutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

type pairs map[string]string

func (p pairs) String() string { return fmt.Sprint(map[string]string(p)) }

func (p pairs) Set(s string) error {
	name, value, ok := strings.Cut(s, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=VALUE, got %q", s)
	}
	p[name] = value
	return nil
}

func main() {
	include := flag.String("I", ".", "import directory")
	out := flag.String("out", ".", "output directory")
	plugins, opts := pairs{}, pairs{}
	var order []string
	flag.Func("plugin", "NAME=PATH of a protoc plugin (repeatable, run in order)", func(s string) error {
		if err := plugins.Set(s); err != nil {
			return err
		}
		name, _, _ := strings.Cut(s, "=")
		order = append(order, name)
		return nil
	})
	flag.Var(opts, "opt", "NAME=OPTIONS: the parameter passed to plugin NAME")
	flag.Parse()
	if err := run(*include, *out, flag.Args(), order, plugins, opts); err != nil {
		fmt.Fprintln(os.Stderr, "protoc-lite:", err)
		os.Exit(1)
	}
}

func run(include, out string, files, order []string, plugins, opts pairs) error {
	if len(files) == 0 || len(order) == 0 {
		return fmt.Errorf("usage: protoc-lite -I DIR -plugin NAME=PATH [-opt NAME=OPTS] -out DIR FILE.proto")
	}
	compiler := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{include}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	compiled, err := compiler.Compile(context.Background(), files...)
	if err != nil {
		return fmt.Errorf("compile: %w", err)
	}
	// Every file the plugins see, dependencies first, as protoc sends them.
	var all []*descriptorpb.FileDescriptorProto
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := 0; i < imports.Len(); i++ {
			add(imports.Get(i).FileDescriptor)
		}
		all = append(all, protoutil.ProtoFromFileDescriptor(fd))
	}
	for _, f := range compiled {
		add(f)
	}
	for _, name := range order {
		req := &pluginpb.CodeGeneratorRequest{
			FileToGenerate: files,
			Parameter:      proto.String(opts[name]),
			ProtoFile:      all,
		}
		if err := runPlugin(name, plugins[name], req, out); err != nil {
			return err
		}
	}
	return nil
}

func runPlugin(name, path string, req *pluginpb.CodeGeneratorRequest, out string) error {
	in, err := proto.Marshal(req)
	if err != nil {
		return fmt.Errorf("plugin %s: encode request: %w", name, err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(path)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("plugin %s (%s): %w: %s", name, path, err, stderr.String())
	}
	var resp pluginpb.CodeGeneratorResponse
	if err := proto.Unmarshal(stdout.Bytes(), &resp); err != nil {
		return fmt.Errorf("plugin %s: decode response: %w", name, err)
	}
	if resp.Error != nil {
		return fmt.Errorf("plugin %s: %s", name, resp.GetError())
	}
	for _, f := range resp.File {
		if f.GetInsertionPoint() != "" {
			return fmt.Errorf("plugin %s: insertion points are not supported (%s)", name, f.GetName())
		}
		dst := filepath.Join(out, filepath.FromSlash(f.GetName()))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return fmt.Errorf("plugin %s: %w", name, err)
		}
		if err := os.WriteFile(dst, []byte(f.GetContent()), 0o644); err != nil {
			return fmt.Errorf("plugin %s: %w", name, err)
		}
	}
	return nil
}
