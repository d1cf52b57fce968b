package k8s

import "github.com/jtarchie/pocketci/orchestra"

// Labels and annotations on everything the driver creates. A label holds a
// sanitized value (orchestra.SafeName with DNSLabelRule: always a valid
// label value, distinct inputs give distinct values); the annotation of the
// same key holds the exact value, which lookups check.
const (
	LabelNamespace = "pocketci.namespace"
	LabelTaskID    = "pocketci.task-id"
	LabelVolume    = "pocketci.volume"
)

// containerName is the name of the task's container in its pod.
const containerName = "task"

// labelValue turns s into a valid label value.
func labelValue(s string) string { return orchestra.SafeName(orchestra.DNSLabelRule, s) }

// podName is the pod of task id in namespace: a DNS-1123 label, hashed when
// sanitizing changed it.
func podName(namespace, id string) string {
	return orchestra.SafeName(orchestra.DNSLabelRule, namespace, id)
}

// claimName is the PVC of volume name in namespace.
func claimName(namespace, name string) string {
	return orchestra.SafeName(orchestra.DNSLabelRule, namespace, name)
}

// namespaceSelector selects what the driver created for namespace.
func namespaceSelector(namespace string) string {
	return LabelNamespace + "=" + labelValue(namespace)
}
