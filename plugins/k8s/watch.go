package k8s

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// podWatch is one informer over the driver's pods (by namespace label). Status
// and waits read its store: no GET per call. Every change wakes the waiters.
type podWatch struct {
	client    kubernetes.Interface
	namespace string
	selector  string
	logger    *slog.Logger

	mu       sync.Mutex
	started  bool
	stopped  bool
	stopCh   chan struct{}
	informer cache.SharedIndexInformer
	changed  chan struct{} // closed and replaced on every event
}

func newPodWatch(client kubernetes.Interface, namespace, selector string, logger *slog.Logger) *podWatch {
	return &podWatch{client: client, namespace: namespace, selector: selector, logger: logger,
		stopCh: make(chan struct{}), changed: make(chan struct{})}
}

// start starts the informer on first use and waits for its first list.
func (w *podWatch) start(ctx context.Context) error {
	w.mu.Lock()
	if !w.started {
		w.started = true
		f := informers.NewSharedInformerFactoryWithOptions(w.client, 0,
			informers.WithNamespace(w.namespace),
			informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = w.selector }))
		w.informer = f.Core().V1().Pods().Informer()
		notify := func(any) { w.notify() }
		if _, err := w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: notify, UpdateFunc: func(_, n any) { w.notify() }, DeleteFunc: notify,
		}); err != nil {
			w.mu.Unlock()
			return fmt.Errorf("watch pods: %w", err)
		}
		go w.informer.Run(w.stopCh)
	}
	inf := w.informer
	w.mu.Unlock()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("watch pods in namespace %q (%s): the first list did not finish: %w", w.namespace, w.selector, context.Cause(ctx))
	}
	return nil
}

func (w *podWatch) notify() {
	w.mu.Lock()
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// stop stops the informer. Safe to call many times.
func (w *podWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.stopped = true
		close(w.stopCh)
	}
}

// get returns the pod as last seen, and whether it is in the store.
func (w *podWatch) get(name string) (*corev1.Pod, bool) {
	w.mu.Lock()
	inf := w.informer
	w.mu.Unlock()
	if inf == nil {
		return nil, false
	}
	obj, ok, err := inf.GetStore().GetByKey(w.namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := obj.(*corev1.Pod)
	return p, ok
}

// wait calls check with the pod (nil when absent) now and after every
// change, until check returns true or an error, or ctx ends.
func (w *podWatch) wait(ctx context.Context, name string, check func(*corev1.Pod) (bool, error)) error {
	for {
		w.mu.Lock()
		ch := w.changed
		w.mu.Unlock()
		p, _ := w.get(name)
		done, err := check(p)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-ch:
		case <-w.stopCh:
			return fmt.Errorf("watch of pod %q stopped (driver closed)", name)
		}
	}
}
