"""A fake of MicroPython's ``rp2`` module for host tests: ``asm_pio`` records a
PIO program the way the real one reads it (the function runs once with the
module's globals swapped for the instruction names), and ``StateMachine``
interprets the instructions the step program uses (pull, push, mov, set, nop,
jmp with always / pin / x_dec) against the fake ``machine`` pins. A burst runs
to its end (or until the program blocks on an empty FIFO) when a word is put,
so a test sees every STEP edge; ``hang = True`` makes the machine never finish
(a stuck burst). Written in the MicroPython subset (CPython and the unix port).
"""

LOG = []
MACHINES = {}  # state machine id -> StateMachine
MAX_INSTRUCTIONS = 2000000  # a runaway program is a test failure, not a hang


class PIO:
    OUT_LOW = 0
    OUT_HIGH = 1
    IN_LOW = 0
    IN_HIGH = 1
    SHIFT_LEFT = 0
    SHIFT_RIGHT = 1


class _Instr:
    def __init__(self, prog, op, args):
        self.op = op
        self.args = args
        self.delay = 0
        prog.code.append(self)

    def __getitem__(self, delay):
        self.delay = delay
        return self

    def side(self, v):
        return self


class Program:
    def __init__(self, kw):
        self.kw = kw
        self.code = []
        self.labels = {}

    def names(self):
        prog = self

        def op(name):
            return lambda *args: _Instr(prog, name, args)

        def label(name):
            prog.labels[name] = len(prog.code)

        g = {"label": label}
        for name in ("pull", "push", "mov", "set", "nop", "jmp", "wait", "in_", "out", "irq"):
            g[name] = op(name)
        for name in ("block", "noblock", "x", "y", "osr", "isr", "pins", "pin", "x_dec",
                     "y_dec", "not_x", "not_y", "null"):
            g[name] = name
        return g


def asm_pio(**kw):
    def dec(f):
        prog = Program(kw)
        gl = f.__globals__
        old = {}
        for k in gl:
            old[k] = gl[k]
        gl.clear()
        gl.update(prog.names())
        try:
            f()
        finally:
            gl.clear()
            gl.update(old)
        LOG.append(("asm_pio", len(prog.code)))
        return prog
    return dec


class StateMachine:
    def __init__(self, id, prog=None, freq=-1, set_base=None, jmp_pin=None, **kw):
        self.id = id
        self.osr = 0
        self.isr = 0
        self.running = False
        self.hang = False
        self.executed = []
        MACHINES[id] = self
        self.init(prog, freq, set_base, jmp_pin)

    def init(self, prog, freq=-1, set_base=None, jmp_pin=None, **kw):
        """(Re)configure: the RP2040's init clears both FIFOs and restarts."""
        self.prog = prog
        self.freq = freq
        self.set_base = set_base
        self.jmp_pin = jmp_pin
        self.tx = []
        self.rx = []
        self.pc = 0
        self.x = 0
        LOG.append(("sm_init", self.id, freq))

    def active(self, v=None):
        if v is None:
            return 1 if self.running else 0
        self.running = bool(v)
        LOG.append(("sm_active", self.id, 1 if v else 0))
        if v:
            self._run()
        return None

    def restart(self):
        self.pc = 0
        self.x = 0
        LOG.append(("sm_restart", self.id))

    def exec(self, text):
        self.executed.append(text)
        if text == "set(pins, 0)" and self.set_base is not None:
            self.set_base.value(0)

    def put(self, word):
        self.tx.append(word & 0xFFFFFFFF)
        LOG.append(("sm_put", self.id, word))
        self._run()

    def get(self):
        return self.rx.pop(0)

    def rx_fifo(self):
        return len(self.rx)

    def tx_fifo(self):
        return len(self.tx)

    def _run(self):
        if not self.running or self.hang or self.prog is None:
            return
        code = self.prog.code
        labels = self.prog.labels
        for _ in range(MAX_INSTRUCTIONS):
            ins = code[self.pc]
            op, a = ins.op, ins.args
            nxt = (self.pc + 1) % len(code)
            if op == "pull":
                if not self.tx:
                    return  # blocked until the next put
                self.osr = self.tx.pop(0)
            elif op == "push":
                self.rx.append(self.isr)
            elif op == "mov":
                v = {"x": self.x, "osr": self.osr, "isr": self.isr}[a[1]]
                if a[0] == "x":
                    self.x = v
                elif a[0] == "isr":
                    self.isr = v
                else:
                    self.osr = v
            elif op == "set":
                if a[0] == "pins":
                    self.set_base.value(a[1])
                else:
                    self.x = a[1]
            elif op == "jmp":
                if len(a) == 1:
                    nxt = labels[a[0]]
                elif a[0] == "pin":
                    if self.jmp_pin.value():
                        nxt = labels[a[1]]
                elif a[0] == "x_dec":
                    if self.x != 0:
                        nxt = labels[a[1]]
                    self.x = (self.x - 1) & 0xFFFFFFFF
                else:
                    raise NotImplementedError("jmp condition %s" % a[0])
            elif op != "nop":
                raise NotImplementedError("PIO op %s" % op)
            self.pc = nxt
        raise RuntimeError("PIO program ran away")
