// npm `slip39` ships no types: the calls the portal makes.
declare module 'slip39' {
  interface Slip39Node {
    mnemonics: string[]
  }
  interface Slip39 {
    fromPath(path: string): Slip39Node
  }
  const slip39: {
    recoverSecret(mnemonics: string[], passphrase: string): number[]
    fromArray(
      secret: number[],
      options: {
        passphrase: string
        threshold: number
        groups: [number, number][]
        iterationExponent: number
        extendableBackupFlag: number
      },
    ): Slip39
  }
  export default slip39
}
