"""Device models on the fake ``machine`` bus and pins (CPython and the unix port):
the DS3231 RTC (registers, oscillator-stop flag) and the HX711 load-cell
amplifier (24 bits shifted out MSB first on SCK rising edges)."""

import machine


class DS3231:
    def __init__(self):
        self.regs = bytearray(19)
        self.regs[0x0F] = 0x80  # a new chip: oscillator-stop flag set

    def readfrom_mem(self, reg, n):
        return bytes(self.regs[reg:reg + n])

    def writeto_mem(self, reg, data):
        for i in range(len(data)):
            self.regs[reg + i] = data[i]


class HX711:
    """``value()`` gives the next conversion (signed 24-bit); ``dead`` keeps DOUT
    high (no conversion ever ready)."""

    def __init__(self, dout, sck, value):
        self.dout = dout
        self.value = value
        self.dead = False
        self.bits = 0
        self.word = 0
        self.clocks = 0
        self.reads = 0
        machine.drive(dout, 0)
        machine.listen(sck, self.edge)

    def edge(self, pin, level):
        if self.dead:
            machine.drive(self.dout, 1)
            return
        if level != 1:
            return
        if self.clocks == 0:
            self.word = self.value() & 0xFFFFFF
            self.reads += 1
        if self.clocks < 24:
            machine.drive(self.dout, (self.word >> (23 - self.clocks)) & 1)
        self.clocks += 1
        if self.clocks == 25:
            self.clocks = 0
            machine.drive(self.dout, 0)  # the next conversion is ready at once

    def kill(self):
        self.dead = True
        machine.drive(self.dout, 1)
