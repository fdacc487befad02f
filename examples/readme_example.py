"""The README's example: the seed document's expression, differentiated by pyautograd."""

from pyautograd.engine import Value

# Forward pass
x = Value(2.0)
y = Value(3.0)
z = x * y + y + x.tanh()

print(f"z = {z.data:.4f}")

# Backward pass
z.backward()
print(f"dz/dx = {x.grad:.4f}")
print(f"dz/dy = {y.grad:.4f}")
