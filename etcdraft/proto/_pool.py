"""etcdraft's private protobuf descriptor pool.

The generated modules register their messages here instead of in protobuf's default
pool, so an application that also loads etcd's or ev-node's own generated code (which
declare the same full names, ``etcdserverpb.*``, ``mvccpb.*``, ``evnode.v1.*``) never
sees a "duplicate symbol" conflict. The bytes on the wire are the same either way.
``make proto`` (scripts/gen-proto) points the generated code at this pool."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
