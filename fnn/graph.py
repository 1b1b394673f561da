"""A scalar computational graph with forward and backward passes, for teaching.

[Deep Learning 2020, Computational graph]: f(x, y, z) = (x + y)·z is split into the
intermediate q = x + y and f = q·z. The forward pass computes values from the
inputs to the output; the backward pass applies the chain rule from the output
to the inputs, each node passing ∂f/∂(node) to its parents:

    ∂f/∂f = 1,  ∂f/∂q = z,  ∂f/∂z = q,  ∂f/∂x = ∂f/∂q · ∂q/∂x = z,  ∂f/∂y = z

so ∇f(−2, 5, −4) = (−4, −4, 3). Where a node feeds several others, the
contributions of all paths are summed ([Neacșu & Vasilescu, Multiple paths]).

Every node type holds its local derivative next to its forward rule, exactly as
fnn's layers do. This is plain Python on floats: a model of what
backpropagation does, not a tool for training.

Example::

    x, y, z = Node(-2.0), Node(5.0), Node(-4.0)
    f = (x + y) * z
    f.backward()
    (x.grad, y.grad, z.grad)   # (-4.0, -4.0, 3.0)
"""

import math

__all__ = ["Node"]


class Node:
    """A scalar value in a computational graph, with the gradient ∂f/∂(node)
    filled in by :meth:`backward` of the output f.

    Attributes:
      value: the forward value.
      grad: ∂f/∂(this node) after ``f.backward()`` (0.0 before).
      parents: the nodes this one was computed from, each with the local
        derivative ∂(this)/∂(parent).
      op: the operation's name (``"+"``, ``"*"``, ...), ``""`` for an input.
    """

    def __init__(self, value: float, parents=(), op: str = ""):
        self.value = float(value)
        self.grad = 0.0
        self.parents = tuple(parents)  # ((parent, local derivative), ...)
        self.op = op

    def __repr__(self) -> str:
        return f"Node(value={self.value}, grad={self.grad}, op={self.op!r})"

    @staticmethod
    def _lift(other) -> "Node":
        return other if isinstance(other, Node) else Node(other)

    # forward rule and local derivatives, side by side
    def __add__(self, other) -> "Node":
        other = self._lift(other)  # q = a + b;  ∂q/∂a = 1, ∂q/∂b = 1
        return Node(self.value + other.value, ((self, 1.0), (other, 1.0)), "+")

    def __mul__(self, other) -> "Node":
        other = self._lift(other)  # f = a·b;  ∂f/∂a = b, ∂f/∂b = a
        return Node(
            self.value * other.value, ((self, other.value), (other, self.value)), "*"
        )

    def __neg__(self) -> "Node":
        return self * -1.0

    def __sub__(self, other) -> "Node":
        return self + (-self._lift(other))

    __radd__ = __add__
    __rmul__ = __mul__

    def exp(self) -> "Node":
        e = math.exp(self.value)  # ∂e^a/∂a = e^a
        return Node(e, ((self, e),), "exp")

    def sigmoid(self) -> "Node":
        s = 1.0 / (1.0 + math.exp(-self.value))  # σ' = σ(1 − σ)
        return Node(s, ((self, s * (1.0 - s)),), "sigmoid")

    def relu(self) -> "Node":
        return Node(max(self.value, 0.0), ((self, float(self.value > 0)),), "relu")

    def backward(self) -> None:
        """Fill in ``grad`` = ∂self/∂node for every node this one depends on.

        Nodes are visited in reverse topological order, so a node passes its
        gradient on only once every path into it has been summed.
        """
        order, seen = [], set()

        def visit(node):
            if id(node) not in seen:
                seen.add(id(node))
                for parent, _ in node.parents:
                    visit(parent)
                order.append(node)

        visit(self)
        for node in order:
            node.grad = 0.0
        self.grad = 1.0  # ∂f/∂f = 1
        for node in reversed(order):
            for parent, local in node.parents:
                parent.grad += node.grad * local  # chain rule, summed over paths
